# kvant — build, tests, sanitizers, fuzzers, benchmarks.
#   make            build/kvant and build/libkvant.a
#   make test       build and run the whole suite (closing line "N passed, N failed")
#   make asan       the suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make check      test, then asan, then (with clang) test-fuzz for CHECK_FUZZ_SECONDS (5): CI's command, one closing line
#   make fuzz       libFuzzer targets (clang) in build-fuzz/
#   make test-fuzz  run each fuzz target for FUZZ_SECONDS (default 20) seeded with valid files
#   make bench      benchmarks (numbers live here, never in tests)
#   make cuda       build-cuda/kvant and build-cuda/kvant_test with the CUDA backend (nvcc, sm_90a; no GPU needed
#                   to build); make test-cuda runs the suite from it (GPU tests skip without a device)
# Options: CC=clang, BLAS=0 (ignore OpenBLAS), ARCH= (default: none, the binary runs on any x86-64; kernels
#          for AVX2 and AVX-512 are chosen at run time by CPUID; ARCH=-march=native also works), V=1.

CC      ?= gcc
ARCH    ?=
OPT     ?= -O2
BUILD   ?= build
CSTD     = -std=c11
WARN     = -Wall -Wextra -Wno-unused-parameter -Wshadow=local -Wvla
CPPFLAGS = -Iinclude -Isrc -D_GNU_SOURCE
CFLAGS   = $(CSTD) $(OPT) $(ARCH) -g $(WARN) -pthread -fno-math-errno -ffp-contract=off $(EXTRA_CFLAGS)
LDLIBS   = -lm -pthread

# Optional OpenBLAS (dense algebra): detected by compiling a probe.
BLAS ?= 1
ifeq ($(BLAS),1)
HAVE_OPENBLAS := $(shell printf '\043include <cblas.h>\nint main(void){float a=1,b=1,c=0;cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,1,1,1,1,&a,1,&b,1,0,&c,1);return 0;}\n' | $(CC) -x c - -I/usr/include/x86_64-linux-gnu/openblas-pthread -lopenblas -o /dev/null 2>/dev/null && echo 1)
endif
ifeq ($(HAVE_OPENBLAS),1)
CPPFLAGS += -DKV_HAVE_OPENBLAS -I/usr/include/x86_64-linux-gnu/openblas-pthread
LDLIBS   += -lopenblas
endif

LIB_SRC  := $(sort $(shell find src -name '*.c'))
CLI_SRC  := $(sort $(wildcard tools/kvant/*.c))
TEST_SRC := $(sort $(wildcard tests/*.c))
BENCH_SRC:= $(sort $(wildcard bench/*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)

# Optional CUDA backend (src/kernels/cuda/*.cu): only `make cuda` (CUDA=1) compiles and links it.
NVCC      ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= -gencode=arch=compute_90a,code=sm_90a
CU_SRC    := $(sort $(wildcard src/kernels/cuda/*.cu))
ifeq ($(CUDA),1)
CPPFLAGS += -DKV_HAVE_CUDA
LIB_OBJ  += $(CU_SRC:%.cu=$(BUILD)/%.o)
LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
endif

ifneq ($(V),1)
Q = @
endif

.PHONY: all test asan check check-layers fuzz test-fuzz bench clean check-headers cuda test-cuda
all: $(BUILD)/kvant $(BUILD)/libkvant.a $(BUILD)/gen_model

# Kernels for one instruction set live in files named *_avx2.c / *_avx512.c / *_avx512vbmi.c, compiled with that ISA's flags
# and called only after CPUID says the CPU has it (src/kernels/cpu/kernels.h). Everything else is baseline
# x86-64 (SSE2) and, as -std=c11 implies -ffp-contract=off, never fuses a*b+c: same bytes on any x86-64.
ISA_avx2   = -mavx2 -mfma -mf16c
ISA_avx512 = -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni
ISA_avx512vbmi = $(ISA_avx512) -mavx512vbmi
isa_flags  = $(if $(filter %_avx512vbmi.c,$<),$(ISA_avx512vbmi),$(if $(filter %_avx512.c,$<),$(ISA_avx512),$(if $(filter %_avx2.c,$<),$(ISA_avx2))))

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC  $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(isa_flags) -MMD -MP -c $< -o $@

$(BUILD)/libkvant.a: $(LIB_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/kvant: $(CLI_OBJ) $(BUILD)/libkvant.a
	$(Q)$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libkvant.a $(LDLIBS)

# the scale-test model generator (bench/scale.sh)
$(BUILD)/gen_model: $(BUILD)/bench/gen_model.o $(BUILD)/libkvant.a
	$(Q)$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libkvant.a $(LDLIBS)

$(BUILD)/kvant_test: $(TEST_OBJ) $(BUILD)/libkvant.a
	$(Q)$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(BUILD)/libkvant.a $(LDLIBS)

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC $<")
	$(Q)$(NVCC) -O3 -std=c++17 $(CUDA_ARCH) -Iinclude -Isrc -D_GNU_SOURCE -DKV_HAVE_CUDA -Xcompiler -Wall -MMD -MP -c $< -o $@
cuda:
	@if [ -z "$(NVCC)" ]; then echo "make cuda: nvcc not found (install the CUDA toolkit or set NVCC=/path/to/nvcc)"; exit 1; fi
	$(Q)$(MAKE) --no-print-directory BUILD=build-cuda CUDA=1 build-cuda/kvant build-cuda/kvant_test
test-cuda: cuda
	$(Q)KVANT_BIN=build-cuda/kvant build-cuda/kvant_test $(TESTS)

# TESTS="name-substring ..." runs a subset.
test: $(BUILD)/kvant $(BUILD)/kvant_test
	$(Q)KVANT_BIN=$(BUILD)/kvant $(BUILD)/kvant_test $(TESTS)

SAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
asan:
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 EXTRA_CFLAGS="$(SAN_FLAGS)" build-asan/kvant build-asan/kvant_test
	$(Q)ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  KVANT_BIN=build-asan/kvant KVANT_SANITIZED=1 build-asan/kvant_test $(TESTS)

# CI (.ci/run, the README's test command): the normal and the sanitized suite and a short fuzz smoke, summed.
CHECK_FUZZ_SECONDS ?= 5
# lower layers (core, formats, kernels, io, model) never include or call transforms, algos, eval
check-layers: $(BUILD)/libkvant.a
	$(Q)sh scripts/check_layers.sh $(BUILD)

check:
	$(Q)MAKE="$(MAKE)" FUZZ_SECONDS=$(CHECK_FUZZ_SECONDS) sh scripts/check.sh

# libFuzzer targets: fuzz/fuzz_<parser>.c, each defines LLVMFuzzerTestOneInput.
FUZZ_SRC   := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_BIN   := $(FUZZ_SRC:fuzz/%.c=build-fuzz/%)
FUZZ_SECONDS ?= 20
FUZZ_CC    ?= clang
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=build-fuzz/%.o)
build-fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) -std=c11 -O1 -g -Iinclude -Isrc -D_GNU_SOURCE $(isa_flags) -fsanitize=fuzzer-no-link,address,undefined $(FUZZ_EXTRA) -MMD -MP -c $< -o $@
build-fuzz/libkvant.a: $(FUZZ_LIB_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^
build-fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_util.h build-fuzz/libkvant.a
	$(Q)$(FUZZ_CC) -std=c11 -O1 -g -Iinclude -Isrc -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined $< build-fuzz/libkvant.a -lm -pthread -o $@
# fuzz_recipe drives `kvant quantize --recipe` itself: it links the CLI's objects (main.c's main renamed)
FUZZ_CLI_OBJ := $(CLI_SRC:%.c=build-fuzz/%.o)
build-fuzz/tools/kvant/main.o: FUZZ_EXTRA = -Dmain=kvant_cli_main
build-fuzz/fuzz_recipe: fuzz/fuzz_recipe.c fuzz/fuzz_util.h build-fuzz/libkvant.a $(FUZZ_CLI_OBJ)
	$(Q)$(FUZZ_CC) -std=c11 -O1 -g -Iinclude -Isrc -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined $< $(FUZZ_CLI_OBJ) build-fuzz/libkvant.a -lm -pthread -o $@
fuzz: $(FUZZ_BIN)
test-fuzz: fuzz
	$(Q)sh fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

bench: $(BUILD)/kvant
	$(Q)sh bench/run.sh $(BUILD)/kvant

clean:
	rm -rf build build-asan build-fuzz build-cuda

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_CLI_OBJ:.o=.d) $(BUILD)/bench/gen_model.d
