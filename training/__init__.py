"""Training Video-LLaVA on TRL's SFTTrainer: data, collator, stages, launch and export (`videollava train`)."""
