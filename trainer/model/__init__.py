"""The model: ``hub`` (where it comes from), ``load`` (tokenizer, base model, LoRA), ``inference`` (base +
adapter for merge, chat and eval)."""
