"""The diffusion model: network (unet), pure math (schedules, objectives, samplers) and the fit loop (trainer)."""
