#!/usr/bin/env bash
# The main job on the embedded default: the shipped ResNet-20 trained on Fashion-MNIST, deployed
# with ONNX Runtime on this CPU at batch 32 (a setting where latency follows channel counts), one
# inference thread (THREADS=2 for both cores: on the project's shared 2-core VM two threads time
# 2-4x noisier and their whole models stray further from the table; see docs/latency.md, "One inference thread or two").
#   profile the device -> prune to half the measured latency with NetAdapt -> fine-tune -> measure -> report
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${RUN:-runs/demo-$(date +%Y%m%d-%H%M%S)}
CHECKPOINT=${CHECKPOINT:-checkpoints/resnet20-fmnist}
BUDGET=${BUDGET:-0.5x}
THREADS=${THREADS:-1}
HW=".venv/bin/hwprune"

echo "== 1/2 profile: latency table for $CHECKPOINT on onnxruntime, batch 32, $THREADS thread(s) -> $RUN/lut.json"
$HW profile --checkpoint "$CHECKPOINT" --backend onnxruntime --batch 32 --threads "$THREADS" --out "$RUN/lut.json"

echo "== 2/2 prune to $BUDGET of the measured latency with NetAdapt -> $RUN/prune"
# Candidates are scored after 10 short fine-tune steps on 1000 validation images (the budget benchmark's
# setting), which keeps the NetAdapt search to 1-2 minutes on 2 cores (bf16 where the CPU has it).
$HW prune --checkpoint "$CHECKPOINT" --lut "$RUN/lut.json" --budget "$BUDGET" --agent netadapt \
    --search-finetune-steps 10 --val-samples 1000 --out "$RUN/prune"

echo
cat "$RUN/prune/report.md"
echo "report: $RUN/prune/report.md (and report.json); pruned model: $RUN/prune/model"
