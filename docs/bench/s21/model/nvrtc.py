import ctypes, os, sys
# NVRTC_LIB: which libnvrtc (12.9 from the session-21 wheels by default; comp.sh of session 22
# sets the 13.0 one, the device's).
lib = ctypes.CDLL(os.environ.get('NVRTC_LIB', '/tmp/cudapip/nvrtc/nvidia/cuda_nvrtc/lib/libnvrtc.so.12'))
src = open(sys.argv[1]).read().encode()
prog = ctypes.c_void_p()
assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"k.cu", 0, None, None) == 0
opts = [b"--gpu-architecture=sm_90a", b"-lineinfo"] + [a.encode() for a in sys.argv[3:]]
arr = (ctypes.c_char_p * len(opts))(*opts)
rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
n = ctypes.c_size_t(); lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
log = ctypes.create_string_buffer(n.value); lib.nvrtcGetProgramLog(prog, log)
if log.value.strip(): print(log.value.decode())
if rc: sys.exit(rc)
lib.nvrtcGetPTXSize(prog, ctypes.byref(n)); ptx = ctypes.create_string_buffer(n.value); lib.nvrtcGetPTX(prog, ptx)
open(sys.argv[2], 'wb').write(ptx.value)
