#!/usr/bin/env bash
# The main job (README "Quick start"): set up, generate five small models that share tensors,
# add them to a demo store, and show what the store holds, what dedup saved, and the models in
# each runtime's view (converted where its format is not the runtime's: a GGUF made of the
# safetensors qwen2 model for Ollama/LM Studio/llama.cpp, a safetensors repo of each GGUF for HF).
# The two tiny-llama safetensors models have no tokenizer, so no GGUF can be made of them: `show`
# says so, and they are in the huggingface/ and store/ views only.
set -euo pipefail
EXTRAS=${EXTRAS:-test} source "$(dirname "$0")/setup.sh"
demo=${DEMO_DIR:-$root/demo}
export MODELSTORE_HOME="$demo/home"
if mountpoint -q "$demo/mnt" 2>/dev/null; then fusermount3 -u -z "$demo/mnt" || umount -l "$demo/mnt"; fi
rm -rf "$demo" && mkdir -p "$demo/models"
ms() { echo "+ modelstore $*"; .venv/bin/modelstore "$@"; echo; }

.venv/bin/python - "$demo/models" <<'PY'
import sys
from pathlib import Path
from modelstore.converters.synth import write_hf_model, write_tiny_hf_folder, write_tiny_llama_gguf
out = Path(sys.argv[1])
write_tiny_llama_gguf(out / "tiny-llama-f32.gguf", n_embd=256, n_ff=512, n_layer=4,
                      chat_template="{% for m in messages %}{{ m.content }}{% endfor %}", license="apache-2.0")
write_tiny_llama_gguf(out / "tiny-llama-chat-f32.gguf", n_embd=256, n_ff=512, n_layer=4,
                      changed={"blk.3.ffn_down.weight": 1, "blk.3.ffn_up.weight": 2})
write_tiny_hf_folder(out / "tiny-llama-hf", hidden=256, layers=4, seed=3)
write_tiny_hf_folder(out / "tiny-llama-hf-sharded", hidden=256, layers=4, seed=3, shards=2)
write_hf_model(out / "tiny-qwen2-hf", model_type="qwen2", hidden=256, layers=4, heads=8, kv_heads=2, ff=512)
PY

ms add "$demo/models/tiny-llama-f32.gguf" --name tiny-llama:f32
ms add "$demo/models/tiny-llama-chat-f32.gguf" --name tiny-llama:chat-f32
ms add "$demo/models/tiny-llama-hf" --name demo/tiny-llama
ms add "$demo/models/tiny-llama-hf-sharded" --name demo/tiny-llama-sharded
ms add "$demo/models/tiny-qwen2-hf" --name demo/tiny-qwen2 --gguf-type Q8_0
ms ls
ms show tiny-llama:chat-f32
ms show demo/tiny-qwen2
ms show demo/tiny-llama
ms du
ms fsck --deep

mnt="$demo/mnt"
ms mount "$mnt"
echo "+ the views (find $mnt -maxdepth 6)"
find "$mnt" -maxdepth 6 | sed "s|^$mnt|  mnt|" | sort
echo
echo "+ huggingface_hub.scan_cache_dir($mnt/huggingface)"
.venv/bin/python -c "
import sys, huggingface_hub as h
info = h.scan_cache_dir(sys.argv[1])
for r in info.repos: print(f'  {r.repo_id:32} {r.nb_files} files  {r.size_on_disk_str:>8}  refs {sorted(r.refs)}')
print('  warnings:', info.warnings)" "$mnt/huggingface"
echo
echo "The demo store is $MODELSTORE_HOME, mounted at $mnt. Try for example:"
echo "  HF_HUB_OFFLINE=1 HF_HUB_CACHE=$mnt/huggingface python -c \"import transformers; ...\"  (pip install transformers)"
echo "  OLLAMA_MODELS=$mnt/ollama OLLAMA_NOPRUNE=1 ollama list  (with Ollama installed)"
echo "Unmount with: $PWD/.venv/bin/modelstore umount $mnt"
