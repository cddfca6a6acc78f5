"""Facts the tests check against, written from ../shared/reference/verified-cells.yaml (and, for
LFM2.5-VL-3B, from its SGLang cookbook page's config, sgl-project/sglang
docs/src/snippets/configs/LiquidAI/lfm2.5-vl-3b.jsx) by hand, not read from data/recipes.yaml (so
that a wrong recipe cannot confirm itself)."""

SERVING = {
    "8b-a1b": "LiquidAI/LFM2.5-8B-A1B",
    "instruct": "LiquidAI/LFM2.5-1.2B-Instruct",
    "thinking": "LiquidAI/LFM2.5-1.2B-Thinking",
    "350m": "LiquidAI/LFM2.5-350M",
    "230m": "LiquidAI/LFM2.5-230M",
    "jp": "LiquidAI/LFM2.5-1.2B-JP-202606",
    "vl": "LiquidAI/LFM2.5-VL-1.6B",
    "vl-450m": "LiquidAI/LFM2.5-VL-450M",
    "vl-3b": "LiquidAI/LFM2.5-VL-3B",
}
# LFM2.5-VL-3B's page: the same cell on H100, H200 and B200; its own image; the lfm2 tool-call
# parser only as a Playground toggle.
VL_3B_FLAGS = ["--dtype bfloat16", "--mem-fraction-static 0.48"]
VL_3B_IMAGE = "lmsysorg/sglang:nightly-dev-20260729-16a52bff"
VL_3B_PARSER_TOGGLE = "--tool-call-parser lfm2"
