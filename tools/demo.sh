#!/usr/bin/env bash
# The main job (README "Quick start"): set up, generate three small models that share tensors,
# add them to a demo store, and show what the store holds and what dedup saved.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
demo=${DEMO_DIR:-$root/demo}
export MODELSTORE_HOME="$demo/home"
rm -rf "$demo" && mkdir -p "$demo/models"
ms() { echo "+ modelstore $*"; .venv/bin/modelstore "$@"; echo; }

.venv/bin/python - "$demo/models" <<'PY'
import sys
from pathlib import Path
from modelstore.converters.synth import write_tiny_hf_folder, write_tiny_llama_gguf
out = Path(sys.argv[1])
write_tiny_llama_gguf(out / "tiny-llama-f32.gguf", n_embd=256, n_ff=512, n_layer=4,
                      chat_template="{% for m in messages %}{{ m.content }}{% endfor %}", license="apache-2.0")
write_tiny_llama_gguf(out / "tiny-llama-chat-f32.gguf", n_embd=256, n_ff=512, n_layer=4,
                      changed={"blk.3.ffn_down.weight": 1, "blk.3.ffn_up.weight": 2})
write_tiny_hf_folder(out / "tiny-llama-hf", hidden=256, layers=4, seed=3)
write_tiny_hf_folder(out / "tiny-llama-hf-sharded", hidden=256, layers=4, seed=3, shards=2)
PY

ms add "$demo/models/tiny-llama-f32.gguf" --name tiny-llama:f32
ms add "$demo/models/tiny-llama-chat-f32.gguf" --name tiny-llama:chat-f32
ms add "$demo/models/tiny-llama-hf" --name demo/tiny-llama
ms add "$demo/models/tiny-llama-hf-sharded" --name demo/tiny-llama-sharded
ms ls
ms show tiny-llama:chat-f32
ms du
ms fsck --deep
echo "The demo store is in $MODELSTORE_HOME; run .venv/bin/modelstore --help for more."
