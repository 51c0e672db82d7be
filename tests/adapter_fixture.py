"""An A3 adapter directory exactly as model.train writes OUT/final, for the loading tests."""

import torch


def write_adapter(directory, base_model, seed=0):
    """An A3 adapter directory exactly as model.train writes OUT/final (peft LoRA + a3_extra)."""
    from peft import LoraConfig, get_peft_model

    from model.train.adapters import save_adapter

    torch.manual_seed(seed)
    peft = get_peft_model(base_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
            if name.endswith("query_embed"):
                param.requires_grad_(True)
                param.normal_(0, 0.02)
    save_adapter(peft, directory)
    return peft
