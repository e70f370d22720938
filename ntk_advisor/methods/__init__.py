"""Fine-tuning methods: RoCoFT row/column slices (ours) and LoRA (through PEFT)."""
