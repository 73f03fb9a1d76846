# deepres: make help lists the targets. The first target that needs Python creates .venv and installs the project.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
ARGS ?=
# pytest-xdist workers for make test / test-quick (1: one process, no xdist). Three on two cores: the tests spend a
# third of their time waiting (SLURM jobs, child processes, budgets), and the third worker fills it
TEST_WORKERS ?= 3
XDIST = $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

.DEFAULT_GOAL := help
.PHONY: help install train test test-quick lint contract clean model-table

help:  ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(INSTALLED)  ## create .venv and install the project with its dev tools

train: $(INSTALLED)  ## train one net: make train ARGS="model.depth=56 model.residual=false"
	$(PY) src/train.py $(ARGS)

test: $(INSTALLED)  ## run the test suite (what CI runs)
	$(PY) -m pytest -q $(XDIST) $(ARGS)

test-quick: $(INSTALLED)  ## the suite without the slow and SLURM tests (about 3 minutes on 2 cores): for the edit-test loop
	$(PY) -m pytest -q $(XDIST) -m "not slow and not slurm" $(ARGS)

lint: $(INSTALLED)  ## ruff
	$(VENV)/bin/ruff check .

# A real single-node SLURM cluster on this machine (root, Debian/Ubuntu; installs the packages on first use).
# While it answers, `make test` also runs the SLURM tests (marker `slurm`); CI always starts it (.ci/run).
.PHONY: slurm-up slurm-down test-slurm
slurm-up:  ## start a one-node SLURM cluster here (root; apt-installs it once); make test then runs the SLURM tests
	bash .ci/slurm-up.sh

slurm-down:  ## stop that cluster (SLURM_ARGS=--purge also drops its accounting and state)
	bash .ci/slurm-down.sh $(SLURM_ARGS)

test-slurm: $(INSTALLED)  ## only the SLURM tests (sweeps, requeue, DDP over SLURM tasks) on the running cluster
	$(PY) -m pytest -q -m slurm $(ARGS)

model-table: $(INSTALLED)  ## ImageNet nets: params and multiply-adds at 224x224 beside Table 1's FLOPs
	$(PY) -m deepres.models.flops

.PHONY: bench
bench: $(INSTALLED)  ## CPU speed benchmarks: Lightning vs plain loop, loaders, throughput, JPEG decode, packed runs (benchmarks/results/)
	$(PY) benchmarks/loop_overhead.py --out benchmarks/results/loop_overhead_cpu.md
	$(PY) benchmarks/loader.py --out benchmarks/results/loader_cpu.md
	$(PY) benchmarks/throughput.py --out benchmarks/results/throughput_cpu.md
	$(PY) benchmarks/imagenet_decode.py --out benchmarks/results/imagenet_decode.md
	$(PY) benchmarks/packed.py --out benchmarks/results/packed_cpu.md

# The GPU checks run where the project is not installed (a lent GPU machine: torch but no hydra, no package index):
# with python3 and the wheels of `make gpu-bundle` when there is no .venv. Reports go to $OUT (the device tool's
# folder that comes back), else under benchmarks/results/gpu (DRY=1: /tmp/deepres-gpu-dry).
GPU_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
GPU_OUT ?= $(or $(OUT),$(if $(DRY),/tmp/deepres-gpu-dry,benchmarks/results/gpu))
.PHONY: gpu-check gpu-fidelity gpu-bundle
gpu-check:  ## every GPU figure in one command of <= 8 min (GPU_OUT/check); GPU_PARTS="packs ..." some; DRY=1: on this CPU
	$(GPU_PY) benchmarks/gpu_check.py --out $(GPU_OUT)/check $(if $(DRY),--dry) $(if $(GPU_PARTS),--parts $(GPU_PARTS))

gpu-fidelity:  ## the paper's 64k-iteration CIFAR-10 runs (ResNet/plain-20/56; ResNet-20 in fp32 too) in <= 9 min; DRY=1: 4 its on CPU
	$(GPU_PY) benchmarks/gpu_fidelity.py --out $(GPU_OUT)/fidelity $(if $(DRY),--dry)

gpu-bundle: $(INSTALLED)  ## .gpu/: the wheels a GPU machine lacks (carry it); GPU_DATA=DIR adds DIR's CIFAR-10 copy
	$(PY) benchmarks/gpu_bundle.py --dest .gpu $(if $(GPU_DATA),--data $(GPU_DATA))

CONTRACT := ../shared/contract/check.sh
contract:  ## maintainers: the cross-issue contract checks of their shared folder ($(CONTRACT))
	@test -f $(CONTRACT) || { echo "make contract: no $(CONTRACT) (the maintainers' shared folder beside the clone)"; exit 2; }
	$(MAKE) --no-print-directory $(INSTALLED)
	bash $(CONTRACT) $(ARGS)

clean:  ## remove outputs/ and multirun/ (not .venv, not data/)
	rm -rf outputs multirun

# Reproduce the paper: each target runs its sweeps (skipping finished runs, resuming interrupted ones), then writes its
# figures and tables into the sweep directory. ARGS go to every run (ARGS="data.root=... hydra/launcher=local");
# SEEDS=1,2,3 trains every net once per seed (tables then show mean ± std). The CIFAR-10 sweeps share one directory,
# as do the ImageNet ones, so a net trained for one result serves the others; keep one setting per directory
# (CIFAR_DIR=multirun/short ARGS=trainer.max_steps=6400 for a shortened try).
CIFAR_DIR ?= multirun/cifar10
IMAGENET_DIR ?= multirun/imagenet
SMOKE_DIR ?= multirun/smoke-fig6
SMOKE_FIG4_DIR ?= multirun/smoke-fig4
SMOKE_TABLE3_DIR ?= multirun/smoke-table3
SMOKE_TABLE4_DIR ?= multirun/smoke-table4
SEEDS ?=
.PHONY: reproduce-fig1 reproduce-fig6 reproduce-table6 reproduce-fig7 reproduce-fig4 reproduce-table3 \
        reproduce-table4 smoke-fig6 smoke-fig4 smoke-table3 smoke-table4

# $(call sweep,NAME,DIR): the jobs of sweeps/NAME.yaml, in DIR
sweep = $(PY) src/train.py -m +sweep=$(1) hydra.sweep.dir=$(2) $(if $(SEEDS),seed=$(SEEDS)) $(ARGS)
# $(call evaluate,DIR,MODE): the paper's MODE error (ten_crop, multi_scale) of each completed ImageNet run in DIR not
# yet evaluated so, all in one process (one start-up of torch and Lightning)
evaluate = runs=$$(for run in $(1)/*/; do \
	  if grep -qs '"status": "completed"' $$run/status.json && [ ! -f $$run/eval_$(2).json ]; then echo $$run; fi; \
	  done); [ -z "$$runs" ] || $(PY) src/evaluate.py $$runs eval.mode=$(2)

reproduce-fig1: $(INSTALLED)  ## Fig. 1: plain-20 vs plain-56 on CIFAR-10 (ARGS=..., SEEDS=1,2,3)
	$(call sweep,fig1,$(CIFAR_DIR))
	$(PY) src/report.py $(CIFAR_DIR) fig1

reproduce-fig6: $(INSTALLED)  ## Fig. 6 (plain, ResNet, 110 vs 1202) and Table 6 on CIFAR-10
	$(call sweep,fig6,$(CIFAR_DIR))
	$(call sweep,fig6_right,$(CIFAR_DIR))
	$(PY) src/report.py $(CIFAR_DIR) fig6 table6

reproduce-table6: $(INSTALLED)  ## Table 6: ResNet-20 to ResNet-1202 on CIFAR-10 (SEEDS=1,2,3,4,5 for mean ± std)
	$(call sweep,table6,$(CIFAR_DIR))
	$(PY) src/report.py $(CIFAR_DIR) table6

reproduce-fig7: $(INSTALLED)  ## Fig. 7: std of layer responses of plain-20/56 and ResNet-20/56/110
	$(call sweep,fig7,$(CIFAR_DIR))
	$(PY) src/report.py $(CIFAR_DIR) fig7

reproduce-fig4: $(INSTALLED)  ## Fig. 4 and Table 2 on ImageNet: plain vs ResNet-18/34 (ARGS="data.root=...")
	$(call sweep,table2_fig4,$(IMAGENET_DIR))
	$(call evaluate,$(IMAGENET_DIR),ten_crop)
	$(PY) src/report.py $(IMAGENET_DIR) fig4 table2

reproduce-table3: $(INSTALLED)  ## Table 3 on ImageNet: plain-34, ResNet-34 A/B/C, ResNet-50/101/152
	$(call sweep,table3,$(IMAGENET_DIR))
	$(call evaluate,$(IMAGENET_DIR),ten_crop)
	$(PY) src/report.py $(IMAGENET_DIR) table3

reproduce-table4: $(INSTALLED)  ## Table 4 on ImageNet: ResNet-34 B/C, ResNet-50/101/152, multi-scale testing
	$(call sweep,table4,$(IMAGENET_DIR))
	$(call evaluate,$(IMAGENET_DIR),multi_scale)
	$(PY) src/report.py $(IMAGENET_DIR) table4

# batches of 8 images: one thread is faster than two, and far faster than two competing for a busy CPU
# $(call smoke_imagenet,SWEEP,DIR,REPORTS,MODE): the ImageNet path of a reproduce target on a generated folder
smoke_imagenet = $(PY) -m deepres.data.imagenet_fake $(2)/data && \
	$(PY) src/train.py -m '+sweep=[$(1),smoke_imagenet]' data.root=$(2)/data hydra.sweep.dir=$(2) $(ARGS) && \
	$(call evaluate,$(2),$(4)) && \
	$(PY) src/report.py $(2) $(3)

smoke-fig4: export OMP_NUM_THREADS := 1
smoke-fig4: $(INSTALLED)  ## the reproduce-fig4 path (Table 2, Fig. 4, 10-crop) in about a minute on generated ImageNet
	$(call smoke_imagenet,table2_fig4,$(SMOKE_FIG4_DIR),fig4 table2,ten_crop)

smoke-table3: export OMP_NUM_THREADS := 1
smoke-table3: $(INSTALLED)  ## the reproduce-table3 path (7 nets, 10-crop) in a minute or two on generated ImageNet
	$(call smoke_imagenet,table3,$(SMOKE_TABLE3_DIR),table3,ten_crop)

smoke-table4: export OMP_NUM_THREADS := 1
smoke-table4: $(INSTALLED)  ## the reproduce-table4 path (5 nets, multi-scale) in a minute or two on generated ImageNet
	$(call smoke_imagenet,table4,$(SMOKE_TABLE4_DIR),table4,multi_scale)

smoke-fig6: export OMP_NUM_THREADS := 1
smoke-fig6: $(INSTALLED)  ## the reproduce-fig6 path in about a minute: tiny runs on generated data, CIFAR reports
	$(PY) -m deepres.data.fake_cifar $(SMOKE_DIR)/data --test 64
	$(PY) src/train.py -m '+sweep=[fig6,smoke]' data.root=$(SMOKE_DIR)/data hydra.sweep.dir=$(SMOKE_DIR) $(ARGS)
	$(PY) src/report.py $(SMOKE_DIR) fig1 fig6 table6 fig7

# Table 5: six ImageNet nets (sweeps/table5.yaml) as one ensemble, multi-scale. Each point names its seed (the two
# ResNet-152 differ by theirs), so SEEDS does not apply.
TABLE5_DIR ?= multirun/table5
SMOKE_TABLE5_DIR ?= multirun/smoke-table5
.PHONY: reproduce-table5 smoke-table5

# $(call run_dirs,DIR): the run directories of DIR, those holding .hydra/config.yaml (not DIR/data, a smoke's data)
run_dirs = $$(for config in $(1)/*/.hydra/config.yaml; do echo $${config%/.hydra/config.yaml}; done)
# $(call ensemble,DIR,MODE): the runs of DIR as one ensemble under MODE (DIR/ensemble_MODE.json), unless that file is
# newer than every final.ckpt of DIR
ensemble = if [ ! -f $(1)/ensemble_$(2).json ] || [ -n "$$(find $(1) -name final.ckpt -newer $(1)/ensemble_$(2).json)" ]; \
	then $(PY) src/evaluate.py $(call run_dirs,$(1)) eval.ensemble=true eval.mode=$(2) eval.ensemble_dir=$(1); fi

reproduce-table5: $(INSTALLED)  ## Table 5: ResNet-34 B/C, 50, 101 and two 152s on ImageNet as one multi-scale ensemble
	$(PY) src/train.py -m +sweep=table5 hydra.sweep.dir=$(TABLE5_DIR) $(ARGS)
	$(call ensemble,$(TABLE5_DIR),multi_scale)
	$(PY) src/report.py $(TABLE5_DIR) table5

smoke-table5: export OMP_NUM_THREADS := 1
smoke-table5: $(INSTALLED)  ## the reproduce-table5 path (six nets, one multi-scale ensemble) on generated ImageNet
	$(PY) -m deepres.data.imagenet_fake $(SMOKE_TABLE5_DIR)/data
	$(PY) src/train.py -m '+sweep=[table5,smoke_imagenet]' data.root=$(SMOKE_TABLE5_DIR)/data \
	  hydra.sweep.dir=$(SMOKE_TABLE5_DIR) $(ARGS)
	$(call ensemble,$(SMOKE_TABLE5_DIR),multi_scale)
	$(PY) src/report.py $(SMOKE_TABLE5_DIR) table5

# Tables 7 and 8: Faster R-CNN with VGG-16 and ResNet-101 on PASCAL VOC and MS COCO. Give the ImageNet weights each
# backbone starts from: ARGS="data.root=... backbone_weights.vgg16=PATH 'backbone_weights.resnet=\"PATH\"'"
# (sweeps/table7.yaml). The smoke targets train random backbones on small generated sets.
TABLE7_DIR ?= multirun/table7
TABLE8_DIR ?= multirun/table8
SMOKE_TABLE7_DIR ?= multirun/smoke-table7
SMOKE_TABLE8_DIR ?= multirun/smoke-table8
.PHONY: reproduce-table7 reproduce-table8 smoke-table7 smoke-table8

# $(call smoke_detection,TABLE,LAYOUT,DIR,OVERRIDES): a detection reproduce target on a generated LAYOUT (voc, coco)
smoke_detection = $(PY) -m deepres.detection.generated $(2) $(3)/data && \
	$(PY) src/train.py -m '+sweep=[$(1),smoke_detection]' data.root=$(3)/data hydra.sweep.dir=$(3) $(4) $(ARGS) && \
	$(PY) src/report.py $(3) $(1)

reproduce-table7: $(INSTALLED)  ## Table 7: Faster R-CNN, VGG-16 vs ResNet-101, VOC 07 test mAP and VOC 12 test server files
	$(call sweep,table7,$(TABLE7_DIR))
	$(PY) src/report.py $(TABLE7_DIR) table7

reproduce-table8: $(INSTALLED)  ## Table 8: Faster R-CNN, VGG-16 vs ResNet-101, mAP@.5 and mAP@[.5,.95] on COCO val
	$(call sweep,table8,$(TABLE8_DIR))
	$(PY) src/report.py $(TABLE8_DIR) table8

smoke-table7: export OMP_NUM_THREADS := 1
smoke-table7: $(INSTALLED)  ## the reproduce-table7 path (4 detectors, mAP and server files) on generated VOC
	$(call smoke_detection,table7,voc,$(SMOKE_TABLE7_DIR))

smoke-table8: export OMP_NUM_THREADS := 1
smoke-table8: $(INSTALLED)  ## the reproduce-table8 path (2 detectors, COCO's mAP) on generated COCO
	$(call smoke_detection,table8,coco,$(SMOKE_TABLE8_DIR),'data.train_sets=[train2017]' data.test_set=val2017)
