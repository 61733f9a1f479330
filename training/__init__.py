"""unigs_deploy.training: fine-tuning the UniGS UNet (torch, diffusers, accelerate)."""
