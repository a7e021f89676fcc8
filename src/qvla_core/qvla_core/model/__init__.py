"""Qwen-VLA model pieces: backbone wrapper, tokenizer, DiT flow-matching action decoder, policy."""
