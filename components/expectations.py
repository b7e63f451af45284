"""Great Expectations suites as the project runs them: rules, each with the one-line reason a
failing row gets (used by `validate` over the manifest and by `features` over per-clip
summaries)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from components.errors import SvpError


@dataclass(frozen=True)
class Rule:
    """One expectation and how to say, for a rejected sample, what is wrong with it."""

    expectation: object
    reason: str  # formatted with the offending value as {value}


def run_suite(df: pd.DataFrame, rules: list[Rule],
              name: str = "svp-manifest") -> tuple[list[dict], dict[str, list[str]]]:
    """Validate `df` with GX; return per-expectation results and reasons per failing sample."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    batch = (context.data_sources.add_pandas("svp").add_dataframe_asset("manifest")
             .add_batch_definition_whole_dataframe("all")
             .get_batch(batch_parameters={"dataframe": df}))
    suite = context.suites.add(gx.ExpectationSuite(
        name=name, expectations=[rule.expectation for rule in rules]))
    result = batch.validate(suite, result_format={
        "result_format": "COMPLETE", "unexpected_index_column_names": ["sample_id"]})
    rule_by_id = {rule.expectation.id: rule for rule in rules}
    summary, reasons = [], {}
    for res in result.results:
        config = res.expectation_config
        if res.exception_info.get("raised_exception"):
            raise SvpError(f"expectation {config.type} on {config.kwargs.get('column')} could "
                           f"not run: {res.exception_info.get('exception_message')}")
        column, rule = config.kwargs.get("column"), rule_by_id[config.id]
        failing = res.result.get("unexpected_index_list") or []
        summary.append({"expectation": config.type, "column": column,
                        "success": bool(res.success), "unexpected": len(failing)})
        for hit in failing:
            value = hit.get(column)
            if isinstance(value, float):
                value = int(value) if value.is_integer() else round(value, 3)
            reasons.setdefault(hit["sample_id"], []).append(rule.reason.format(value=value))
    return summary, reasons
