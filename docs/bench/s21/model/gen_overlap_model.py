"""A model of the Hopper forward's consumer step in the inline PTX the kernels emit, to compile
on a machine without a GPU (session 21). Prints CUDA C++ for one variant:
  comb           next Q·Kᵀ and last P·V in one issue block, P rounded before O is settled
  comb_late      the same, P rounded after O is settled
  sep_late       Q·Kᵀ and P·V in separate issue blocks, P rounded late (what f716f1c builds)
  sep_late_d128  sep_late at head dim 128: O in two panels, both P·V products one group
  comb_pp        comb with P double-buffered (loop unrolled by 2)
Usage: python3 gen_overlap_model.py comb_late > k.cu && python3 nvrtc.py k.cu k.ptx &&
       ptxas -arch=sm_90a -v k.ptx -o k.cubin && cuobjdump -sass k.cubin | grep -E 'HGMMA|DEPBAR'
(NVRTC, ptxas: pip wheels nvidia-cuda-nvrtc-cu12, nvidia-cuda-nvcc-cu12; cuobjdump, nvdisasm:
nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm; nvrtc.py loads libnvrtc.so.12 from the wheel's
path, edit it to yours.) The launch bounds are `__launch_bounds__(128)`: edit the output to
model the kernels' (288, 2) at head dim 64 or (288, 1) at 128."""
import sys
variant = sys.argv[1]
def regs(a, n): return ", ".join(f"%{a+i}" for i in range(n))
def ss_lines(out0, da, db):
    L=[]
    for k in range(4):
        L += [f"setp.ne.b32 p, one, {1 if k==0 else 0};", f"add.s64 da, %{da}, {2*k};", f"add.s64 db, %{db}, {2*k};",
              f"wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {{{regs(out0,32)}}}, da, db, p, 1, 1, 0, 0;"]
    return L
def rs_lines(out0, a0, db):
    L=[]
    for k in range(4):
        L += ["setp.ne.b32 p, one, 0;", f"add.s64 db, %{db}, {128*k};",
              f"wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {{{regs(out0,32)}}}, {{{regs(a0+4*k,4)}}}, db, p, 1, 1, 1;"]
    return L
HDR = ["{", ".reg .pred p;", ".reg .b64 da, db;", ".reg .b32 one;", "mov.b32 one, 1;"]
def block(L): return (chr(92)+"n").join(L + ["}"])
def outs(v, n=32, off=0): return ", ".join(f'"=f"({v}.i_{i+off})' for i in range(n))
def ins(v, c="f", n=32, off=0): return ", ".join(f'"{c}"({v}.i_{i+off})' for i in range(n))
sync_ss = lambda out, a, b: f'asm volatile("{block(HDR+["wgmma.fence.sync.aligned;"]+ss_lines(0,32,33)+["wgmma.commit_group.sync.aligned;","wgmma.wait_group.sync.aligned 0;"])}" : {outs(out)} : "l"({a}), "l"({b}) : "memory");'
sync_rs = lambda out, acc, p, b: f'asm volatile("{block(HDR+[f"mov.b32 %{i}, %{32+i};" for i in range(32)]+["wgmma.fence.sync.aligned;"]+rs_lines(0,64,80)+["wgmma.commit_group.sync.aligned;","wgmma.wait_group.sync.aligned 0;"])}" : {outs(out)} : {ins(acc)}, {ins(p,"r",16)}, "l"({b}) : "memory");'
# combined: result 64 regs: %0..31 = S_next, %32..63 = acc_out; inputs acc %64..95, p %96..111, dq %112 dk %113 dv %114
comb = lambda out, acc, p, a, b, c: f'asm volatile("{block(HDR+[f"mov.b32 %{32+i}, %{64+i};" for i in range(32)]+["wgmma.fence.sync.aligned;"]+ss_lines(0,112,113)+["wgmma.commit_group.sync.aligned;"]+rs_lines(32,96,114)+["wgmma.commit_group.sync.aligned;"])}" : {outs(out,64)} : {ins(acc)}, {ins(p,"r",16)}, "l"({a}), "l"({b}), "l"({c}) : "memory");'
NL = chr(92) + "n"
def settle(out, v, off, w):
    body = [f"wgmma.wait_group.sync.aligned {w};"] + [f"mov.b32 %{i}, %{32+i};" for i in range(32)]
    return 'asm volatile("' + NL.join(body) + f'" : {outs(out)} : {ins(v, off=off)} : "memory");'
print(r'''
struct V32 { float i_0,i_1,i_2,i_3,i_4,i_5,i_6,i_7,i_8,i_9,i_10,i_11,i_12,i_13,i_14,i_15,i_16,i_17,i_18,i_19,i_20,i_21,i_22,i_23,i_24,i_25,i_26,i_27,i_28,i_29,i_30,i_31; };
struct V64 { float i_0,i_1,i_2,i_3,i_4,i_5,i_6,i_7,i_8,i_9,i_10,i_11,i_12,i_13,i_14,i_15,i_16,i_17,i_18,i_19,i_20,i_21,i_22,i_23,i_24,i_25,i_26,i_27,i_28,i_29,i_30,i_31,i_32,i_33,i_34,i_35,i_36,i_37,i_38,i_39,i_40,i_41,i_42,i_43,i_44,i_45,i_46,i_47,i_48,i_49,i_50,i_51,i_52,i_53,i_54,i_55,i_56,i_57,i_58,i_59,i_60,i_61,i_62,i_63; };
struct U16 { unsigned i_0,i_1,i_2,i_3,i_4,i_5,i_6,i_7,i_8,i_9,i_10,i_11,i_12,i_13,i_14,i_15; };
#define F(v,i) (((float*)&v)[i])
#define U(v,i) (((unsigned*)&v)[i])
__device__ __forceinline__ unsigned pack(float a, float b) { unsigned r; asm("cvt.rn.f16x2.f32 %0, %2, %1;" : "=r"(r) : "f"(a), "f"(b)); return r; }
extern "C" __global__ void __launch_bounds__(128) k(float* out, int n, unsigned long long dq, unsigned long long dk, unsigned long long dv) {
  V32 acc; for (int i = 0; i < 32; i++) F(acc,i) = out[i];
  float m = -1e30f, l = 0.f, alpha;
''')
def softmax(s, p):
    return f'''
    {{ float mx = m; for (int i = 0; i < 32; i++) mx = fmaxf(mx, F({s},i));
      float al = exp2f(m - mx); m = mx; float sum = 0.f;
      for (int i = 0; i < 32; i++) {{ F({s},i) = exp2f(F({s},i) - mx); sum += F({s},i); }}
      l = l * al + sum;
      for (int i = 0; i < 16; i++) U({p},i) = pack(F({s},2*i), F({s},2*i+1));
      alpha = al; }}'''
print("  V32 s; U16 p; U16 p2;")
print("  " + sync_ss("s", "dq", "dk"))
print(softmax("s", "p"))
if variant == "comb":
    print("  for (int j = 1; j < n; j++) {")
    print("    V64 r; " + comb("r", "acc", "p", "dq", "dk + j", "dv + j"))
    print("    " + settle("s", "r", 0, 1))
    print("    float a_prev = alpha;")
    print(softmax("s", "p"))
    print("    " + settle("acc", "r", 32, 0))
    print("    for (int i = 0; i < 32; i++) F(acc,i) *= alpha;")
    print("  }")
elif variant == "comb_late":
    print("  for (int j = 1; j < n; j++) {")
    print("    V64 r; " + comb("r", "acc", "p", "dq", "dk + j", "dv + j"))
    print("    " + settle("s", "r", 0, 1))
    print(softmax("s", "p").replace("for (int i = 0; i < 16; i++) U(p,i) = pack(F(s,2*i), F(s,2*i+1));", ""))
    print("    " + settle("acc", "r", 32, 0))
    print("    for (int i = 0; i < 32; i++) F(acc,i) *= alpha;")
    print("    for (int i = 0; i < 16; i++) U(p,i) = pack(F(s,2*i), F(s,2*i+1));")
    print("  }")
elif variant == "sep_late":
    print("  for (int j = 1; j < n; j++) {")
    print("    V32 s2; asm volatile(\"" + block(HDR+["wgmma.fence.sync.aligned;"]+ss_lines(0,32,33)+["wgmma.commit_group.sync.aligned;"]) + f'\" : {outs("s2")} : \"l\"(dq), \"l\"(dk + j) : \"memory\");')
    print("    V32 o; asm volatile(\"" + block(HDR+[f"mov.b32 %{i}, %{32+i};" for i in range(32)]+["wgmma.fence.sync.aligned;"]+rs_lines(0,64,80)+["wgmma.commit_group.sync.aligned;"]) + f'\" : {outs("o")} : {ins("acc")}, {ins("p","r",16)}, \"l\"(dv + j) : \"memory\");')
    print("    " + settle("s", "s2", 0, 1))
    print(softmax("s", "p").replace("for (int i = 0; i < 16; i++) U(p,i) = pack(F(s,2*i), F(s,2*i+1));", ""))
    print("    " + settle("acc", "o", 0, 0))
    print("    for (int i = 0; i < 32; i++) F(acc,i) *= alpha;")
    print("    for (int i = 0; i < 16; i++) U(p,i) = pack(F(s,2*i), F(s,2*i+1));")
    print("  }")
elif variant == "sep_late_d128":
    # head dim 128: O in two 64-column panels (acc, acc2), both P·V products in one group.
    print("  V32 acc2; for (int i = 0; i < 32; i++) F(acc2,i) = out[64 + i];")
    print("  for (int j = 1; j < n; j++) {")
    print("    V32 s2; asm volatile(\"" + block(HDR+["wgmma.fence.sync.aligned;"]+ss_lines(0,32,33)+["wgmma.commit_group.sync.aligned;"]) + f'\" : {outs("s2")} : \"l\"(dq), \"l\"(dk + j) : \"memory\");')
    print("    V64 o; asm volatile(\"" + block(HDR+[f"mov.b32 %{i}, %{64+i};" for i in range(64)]+["wgmma.fence.sync.aligned;"]+rs_lines(0,128,144)+rs_lines(32,128,145)+["wgmma.commit_group.sync.aligned;"]) + f'\" : {outs("o",64)} : {ins("acc")}, {ins("acc2")}, {ins("p","r",16)}, \"l\"(dv + j), \"l\"(dv + 2*j) : \"memory\");')
    print("    " + settle("s", "s2", 0, 1))
    print(softmax("s", "p").replace("for (int i = 0; i < 16; i++) U(p,i) = pack(F(s,2*i), F(s,2*i+1));", ""))
    print("    " + settle("acc", "o", 0, 0).replace("wgmma.wait_group.sync.aligned 0;", "wgmma.wait_group.sync.aligned 0;"))
    print("    " + settle("acc2", "o", 32, 0).replace("wgmma.wait_group.sync.aligned 0;", ""))
    print("    for (int i = 0; i < 32; i++) { F(acc,i) *= alpha; F(acc2,i) *= alpha; }")
    print("    for (int i = 0; i < 16; i++) U(p,i) = pack(F(s,2*i), F(s,2*i+1));")
    print("  }")
    print("  for (int i = 0; i < 32; i++) out[threadIdx.x * 64 + 32 + i] = F(acc2,i) / l;")
elif variant == "comb_pp":
    print("  for (int j = 1; j < n; j += 2) {")
    for (pa, pb) in [("p", "p2"), ("p2", "p")]:
        print("   { V64 r; " + comb("r", "acc", pa, "dq", "dk + j", "dv + j"))
        print("    " + settle("s", "r", 0, 1))
        print(softmax("s", pb))
        print("    " + settle("acc", "r", 32, 0))
        print("    for (int i = 0; i < 32; i++) F(acc,i) *= alpha; }")
    print("  }")
print("  { V32 o; " + sync_rs("o", "acc", "p", "dv") + " acc = o; }")
print("  for (int i = 0; i < 32; i++) out[threadIdx.x * 32 + i] = F(acc,i) / l;\n}")
