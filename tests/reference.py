"""Facts the tests check against, written from ../shared/reference/verified-cells.yaml by hand,
not read from data/recipes.yaml (so that a wrong recipe cannot confirm itself)."""

SERVING = {
    "8b-a1b": "LiquidAI/LFM2.5-8B-A1B",
    "instruct": "LiquidAI/LFM2.5-1.2B-Instruct",
    "thinking": "LiquidAI/LFM2.5-1.2B-Thinking",
    "350m": "LiquidAI/LFM2.5-350M",
    "230m": "LiquidAI/LFM2.5-230M",
    "jp": "LiquidAI/LFM2.5-1.2B-JP-202606",
    "vl": "LiquidAI/LFM2.5-VL-1.6B",
    "vl-450m": "LiquidAI/LFM2.5-VL-450M",
}
