"""Prompt templates shipped with qa (text files beside this module, loaded by qa.prompts as the qa.prompt_templates package)."""
