"""Speech for the generated clips: espeak-ng with a voice per identity and a prosody per emotion,
and the per-frame loudness and spectral tilt that drive the mouth."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
from scipy.signal import resample_poly

from components.errors import SvpError
from components.synth.exact import snap

SENTENCES = (
    "She packed the blue boxes before the morning train left the station.",
    "We walked along the river and counted the little boats on the water.",
    "The old clock on the wall stopped at a quarter past nine.",
    "Please bring the papers to my office when the meeting is over.",
    "A warm wind moved through the open window of the kitchen.",
    "They painted the fence white and planted roses by the gate.",
    "My brother found a golden key under the stairs last night.",
    "The children laughed as the puppy chased its own tail.",
    "Nobody told me the bridge would be closed until Friday.",
    "He poured the coffee slowly and looked out at the rain.",
    "The library keeps the rare maps in a locked room upstairs.",
    "Every summer we drive north to visit our grandparents.",
)

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us")
# Voice variants whose synthesis draws no random numbers. espeak-ng 1.51 makes the breath noise
# of variants with a `breath` line (f2, f3, f5) from the C library's rand(), and the same process
# shares rand() with libpulse (loaded through libpcaudio even for --stdout), which on its first
# run on a machine (no ~/.config/pulse yet) draws from it to name its runtime folder: the first
# clips a fresh machine rendered then carried other breath noise, so other bytes.
FEMALE_VARIANTS = ("f1", "f4", "belinda", "linda")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6")
LEAD_IN_S = 0.2  # silence before and after the sentence: the mouth starts and ends closed


@dataclass(frozen=True)
class Voice:
    accent: str
    variant: str  # espeak-ng voice variant, e.g. "m3" or "f4"
    pitch: float  # 0..99
    words_per_minute: float


def random_voice(rng: np.random.Generator, female: bool) -> Voice:
    variants = FEMALE_VARIANTS if female else MALE_VARIANTS
    variant = variants[rng.integers(len(variants))]
    return Voice(
        accent=ACCENTS[rng.integers(len(ACCENTS))],
        variant=variant,
        pitch=rng.uniform(55, 75) if female else rng.uniform(25, 50),
        words_per_minute=rng.uniform(145, 180),
    )


def _range_word(factor: float) -> str:
    for limit, word in ((0.7, "x-low"), (0.9, "low"), (1.15, "medium"), (1.4, "high")):
        if factor < limit:
            return word
    return "x-high"


def speak(
    text: str, voice: Voice, rate: float, pitch: float, pitch_range: float, volume: float,
    sample_rate: int,
) -> np.ndarray:
    """Synthesise `text` as float32 mono samples in [-1, 1] at `sample_rate`."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SvpError("espeak-ng is not installed (apt-get install espeak-ng)")
    ssml = (f'<speak><prosody range="{_range_word(pitch_range)}">{escape(text)}'
            "</prosody></speak>")
    cmd = [
        espeak, "-m", "--stdout", "-v", f"{voice.accent}+{voice.variant}",
        "-p", str(int(np.clip(voice.pitch + pitch, 0, 99))),
        "-s", str(int(voice.words_per_minute * rate)),
        "-a", str(int(np.clip(100 * volume, 10, 200))),
        ssml,
    ]
    run = subprocess.run(cmd, capture_output=True, check=False)
    if run.returncode != 0 or not run.stdout:
        raise SvpError(f"espeak-ng failed for voice {voice.accent}+{voice.variant}: "
                       f"{run.stderr.decode(errors='replace').strip()[:200]}")
    with wave.open(io.BytesIO(run.stdout)) as wav:
        rate_in = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    audio = resample_poly(pcm.astype(np.float32) / 32768.0, sample_rate, rate_in)
    pad = np.zeros(int(LEAD_IN_S * sample_rate), np.float32)
    return np.clip(np.concatenate([pad, audio.astype(np.float32), pad]), -1, 1)


def write_wav(path, samples: np.ndarray, sample_rate: int) -> None:
    """Write float samples as 16-bit mono PCM."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def frame_features(samples: np.ndarray, sample_rate: int, fps: float, n_frames: int):
    """Per video frame: loudness in 0..1 (RMS over the clip's 95th percentile) and spectral
    tilt in -1..1 (high-band minus low-band energy share: + for 's', 'ee'; - for 'oo'), both on
    a 2**-16 grid."""
    hop = sample_rate / fps
    energy, tilt = np.zeros(n_frames), np.zeros(n_frames)
    freqs = np.fft.rfftfreq(int(hop), 1 / sample_rate)
    for i in range(n_frames):
        chunk = samples[int(i * hop):int((i + 1) * hop)]
        if len(chunk) < 8:
            continue
        energy[i] = np.sqrt(np.mean(chunk**2))
        bins = np.fft.rfft(chunk, n=int(hop))
        spectrum = bins.real**2 + bins.imag**2  # not np.abs(): its SIMD kernel rounds per CPU
        total = spectrum.sum() + 1e-12
        tilt[i] = (spectrum[freqs > 2500].sum() - spectrum[freqs < 700].sum()) / total
    scale = np.percentile(energy, 95) + 1e-8
    return snap(np.clip(energy / scale, 0, 1), 16), snap(np.clip(tilt, -1, 1), 16)
