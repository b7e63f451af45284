"""`svp demo`: a web page where a person makes a talking-head video from a portrait, speech and
a style, on one loaded generator (the champion by default).

The page runs what `svp generate` runs (`generate.generate`), so its results, limits and one-line
errors are the CLI's: bad input shows that line in the page and the app keeps serving. One
generation runs at a time through Gradio's queue; a visitor who waits sees their place in it.
Uploads are refused above `demo.max_upload_mb`; each answer deletes the request's uploads from
Gradio's cache and clears them from the page, so nothing a visitor uploads is kept after the
answer (Gradio stores uploads by content, so while other visitors wait in the queue the deletion
waits until it is empty); results are deleted after `demo.keep_results_s`. Nothing is fetched
from the network: system fonts, no analytics, no share links.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np

from components.config import DemoConfig, GenerateConfig
from components.demo.model_card import model_card
from components.errors import SvpError
from components.generation.generate import Request, generate, quality
from components.generation.pipeline import TalkingHeadPipeline

NO_STYLE = "none (style off)"
FROM_VIDEO = "from a style video"
NOTHING = "nothing"


class Demo:
    """The page's one action, on one loaded generator."""

    def __init__(self, pipeline: TalkingHeadPipeline, source: str, cfg: DemoConfig,
                 settings: GenerateConfig):
        self.pipeline, self.source, self.cfg = pipeline, source, cfg
        self.settings = replace(settings,
                                max_audio_s=min(settings.max_audio_s, cfg.max_audio_s))
        presets = pipeline.style_presets
        self.presets = presets.names if presets is not None else []
        self.page: gr.Blocks | None = None  # set by `build_page`
        self.to_delete: set[str] = set()
        # where a video is written before Gradio copies it into its cache (emptied per call)
        self.results = Path(tempfile.mkdtemp(prefix="svp-demo-"))

    def make_video(self, portrait: str | None, speech: str | None, style: str,
                   style_video: str | None, mix_with: str, mix: float, seed: float,
                   pose_video: str | None,
                   progress: gr.Progress = gr.Progress()):  # noqa: B008 (Gradio's idiom)
        uploads = [p for p in (portrait, speech, style_video, pose_video) if p]
        for old in self.results.iterdir():  # copied into Gradio's cache when it was answered
            old.unlink()
        try:
            if not portrait:
                raise SvpError("add a portrait (upload or webcam)")
            if not speech:
                raise SvpError("add speech (upload or microphone)")
            request = self._request(portrait, speech, style, style_video, mix_with, mix, seed,
                                    pose_video)
            made = generate(self.pipeline, request, self.settings,
                            lambda what, done: progress(done, desc=what))
        except SvpError as err:
            raise gr.Error(f"{err} (uploads are deleted after each answer)",
                           print_exception=False) from None
        finally:
            self._discard(uploads)
        note = (f"{made['frames']} frames, {made['seconds']:.2f} s; {made['sampling']}; "
                f"style: {self._style_note(style, mix_with, mix)}; seed {request.seed}. "
                "Your uploads were deleted; upload them again to make another.")
        cleared = [None] * 4
        return made["out"], made["out"], np.asarray(made["crop"]), note, *cleared

    def _discard(self, uploads: list[str]) -> None:
        """Delete the answered request's uploads; Gradio keeps uploads by content, so while
        other requests wait in the queue (they may hold the same file) wait until it is
        empty."""
        self.to_delete.update(uploads)
        if self.page is not None and len(self.page._queue) > 0:  # Gradio 6's queue
            return
        for path in self.to_delete:
            Path(path).unlink(missing_ok=True)
        self.to_delete.clear()

    def _request(self, portrait: str, speech: str, style: str, style_video: str | None,
                 mix_with: str, mix: float, seed: float, pose_video: str | None) -> Request:
        videos: tuple[str, ...] = ()
        presets: tuple[str, ...] = ()
        if style == FROM_VIDEO:
            if not style_video:
                raise SvpError("choose a style video, or another style")
            videos = (style_video,)
        elif style != NO_STYLE:
            presets = (style,)
        two = bool((videos or presets) and mix_with != NOTHING)
        if two:
            presets += (mix_with,)
        if seed is None or not float(seed).is_integer():
            raise SvpError(f"seed must be a whole number, got {seed}")
        out = self.results / "talking_head.mp4"
        return Request(portrait, speech, str(out), style_videos=videos, style_presets=presets,
                       style_mix=float(mix) if two else None, pose_video=pose_video,
                       seed=int(seed))

    @staticmethod
    def _style_note(style: str, mix_with: str, mix: float) -> str:
        first = "the style video" if style == FROM_VIDEO else style
        if style == NO_STYLE or mix_with == NOTHING:
            return first
        return f"{1 - mix:g} x {first} + {mix:g} x {mix_with}"


def build_page(demo: Demo) -> gr.Blocks:
    styles = [*demo.presets, FROM_VIDEO, NO_STYLE]
    first = "neutral" if "neutral" in demo.presets else styles[0]
    with gr.Blocks(title="SVP: talking heads with style", analytics_enabled=False,
                   delete_cache=(60, demo.cfg.keep_results_s)) as page:
        gr.Markdown("# SVP: a talking head from a portrait, speech and a style")
        with gr.Row(equal_height=False):
            with gr.Column(min_width=300):
                portrait = gr.Image(label="Portrait", type="filepath",
                                    sources=["upload", "webcam"], elem_id="portrait")
                speech = gr.Audio(label="Speech", type="filepath",
                                  sources=["upload", "microphone"], elem_id="speech")
                style = gr.Radio(styles, value=first, label="Style (an emotion preset, "
                                 "your own style video, or none)", elem_id="style")
                style_video = gr.Video(label="Style video (for 'from a style video')",
                                       sources=["upload"], elem_id="style-video")
                with gr.Row():
                    mix_with = gr.Dropdown([NOTHING, *demo.presets], value=NOTHING,
                                           label="Mix with", elem_id="mix-with")
                    mix = gr.Slider(0, 1, value=0.5, step=0.05, label="Mix (0: the style, "
                                    "1: the second)", elem_id="mix")
                with gr.Row():
                    seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id="seed")
                    pose_video = gr.Video(label="Head motion from a video (optional)",
                                          sources=["upload"], elem_id="pose-video")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(min_width=300):
                video = gr.Video(label="Result (with its speech)", interactive=False,
                                 elem_id="result")
                download = gr.DownloadButton("Download the mp4", elem_id="download")
                crop = gr.Image(label="The face crop the model saw", interactive=False,
                                elem_id="crop")
                note = gr.Markdown(elem_id="note")
        with gr.Accordion("Model", open=True, elem_id="model"):
            gr.Markdown(_model_panel(demo))
        button.click(demo.make_video,
                     [portrait, speech, style, style_video, mix_with, mix, seed, pose_video],
                     [video, download, crop, note, portrait, speech, style_video, pose_video],
                     api_name="generate", concurrency_limit=1, show_progress_on=[video])
    demo.page = page
    return page


def _model_panel(demo: Demo) -> str:
    report = Path(demo.cfg.report)
    text = model_card(demo.source, demo.pipeline, report,
                      quality(demo.pipeline, None, demo.settings))
    if report.is_file():
        text += f"\n\n[The evaluation report]({_file_url(report)})"
    return text


def _file_url(path: Path) -> str:
    return f"/gradio_api/file={path.resolve()}"


def theme() -> gr.themes.Base:
    """Gradio's default look with the system's fonts: nothing fetched from a font CDN."""
    return gr.themes.Default(font=["system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def launch(demo: Demo, host: str, port: int, block: bool = True) -> gr.Blocks:
    page = build_page(demo)
    page.queue(max_size=demo.cfg.queue_size, default_concurrency_limit=1)
    report = Path(demo.cfg.report)
    page.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                prevent_thread_lock=not block, show_error=True, quiet=True,
                max_file_size=int(demo.cfg.max_upload_mb * 2**20), ssr_mode=False, pwa=False,
                mcp_server=False, theme=theme(), footer_links=["api"],
                allowed_paths=[str(report.resolve().parent)] if report.is_file() else None)
    return page
