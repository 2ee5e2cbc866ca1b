#!/bin/bash
# comp.sh X.cu -> ptxas verdict
export PATH=$PATH:/tmp/cudapip/nvdis/nvidia/cu13/bin:/tmp/cudapip/cuobj/nvidia/cu13/bin
export LD_LIBRARY_PATH=/tmp/cudapip13/nvrtc/nvidia/cu13/lib PATH=/tmp/cudapip13/nvcc/nvidia/cu13/bin:$PATH
b=${1%.cu}
NVRTC_LIB=/tmp/cudapip13/nvrtc/nvidia/cu13/lib/libnvrtc.so.13 python3 $(dirname $0)/../../s21/model/nvrtc.py $1 $b.ptx --include-path=/tmp/cudapip13/hdr/nvidia/cu13/include --include-path=/tmp/cudapip13/hdr/nvidia/cu13/include/cccl || exit 1
ptxas -arch=sm_90a -v $b.ptx -o $b.cubin 2>&1 | grep -E "C75|Used|spill" | sed 's/ptxas info *: //' | cut -c1-200
echo "  SASS: $(cuobjdump -sass $b.cubin 2>/dev/null | grep -c HGMMA) HGMMA, $(cuobjdump -sass $b.cubin | grep -c DEPBAR) DEPBAR"
