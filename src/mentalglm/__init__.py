"""mentalglm: explainable mental-health analysis of Chinese social-media posts with LLMs.

A research and triage aid, never a diagnosis.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "mentalglm is a research and triage aid, not a diagnosis or a substitute for a professional. "
    "本工具仅用于研究与初筛，不构成任何诊断，也不能替代专业人员。"
)
