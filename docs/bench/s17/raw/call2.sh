#!/bin/bash
# Session 17, call 2 (carry .dev: device_probe, CUDA, built at 24e0de0): FlashAttention's
# dense-in-dtype yardstick on the head-dim-128 causal two-branch edge case (Hopper dQ and dK/dV).
xz -dc .dev/device_probe.xz > /tmp/device_probe; chmod +x /tmp/device_probe
(timeout 420 /tmp/device_probe --device cuda --check edge-gradients --edge-lengths 2100 --dtypes f16,bf16 > $OUT/edge-gradients.txt 2>&1; echo rc $? >> $OUT/edge-gradients.txt)
grep -vE "^\s*$" $OUT/edge-gradients.txt | cut -c1-400 | tail -30
