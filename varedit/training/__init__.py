"""Training the VQVAE tokenizer and the VAR transformer (single process or torchrun).

* :mod:`.common` -- distributed setup, seeding, AdamW groups, warm-up + cosine schedule, EMA, atomic
  checkpoints with exact resume, metrics (JSONL), and the shared loop :func:`.common.fit`;
* :mod:`.data`   -- image-folder and synthetic datasets, augmentation, the resumable sharded sampler;
* :mod:`.vqvae`  -- :func:`.vqvae.train_vqvae`;
* :mod:`.var`    -- :func:`.var.train_var` (from scratch, or fine-tuning an official checkpoint).
"""
