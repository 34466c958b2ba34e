"""`diffaug.hf`: the Hugging Face `datasets` adapter (needs the `hf` extra). See diffaug/adapters/hf.py."""

from .adapters.hf import (PROVENANCE, concatenate_shards, expand_dataset, expand_to_disk, perturb_dataset,
                          to_hf_dataset)

__all__ = ["expand_dataset", "perturb_dataset", "expand_to_disk", "concatenate_shards", "to_hf_dataset",
           "PROVENANCE"]
