# Two commands do everything on a fresh machine:
#   make demo   - create .venv, install, analyse the sample media into out/
#   make test   - create .venv, install, run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
MSER := $(VENV)/bin/mser
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch first (an unpinned torch would pull a CUDA build of several GB)
	$(PY) -m pip install -q torch==2.13.0
	# exact versions, no resolver: keeps openai-whisper's GPU-only triton and fer's tensorflow out
	$(PY) -m pip install -q --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(MSER) -v analyze sample_media/interview.mp4 --out out/interview
	$(MSER) -v analyze sample_media/interview.mp4 --transcript sample_media/interview.srt --out out/interview-transcript
	$(PY) -c "import multimodal_ser as m; t = m.load_timeline('out/interview'); \
	print(t.segments[['start','end','speaker','text','audio_label','text_label','face_label','face_static','label','confidence','runner_up','agreement','conflict']].to_string())"

test: $(STAMP)
	$(PY) -m pytest -q

# no weights, no real data: reading a weight file fails the test (tests/conftest.py)
test-fast: $(STAMP)
	MSER_TEST_NO_WEIGHTS=1 $(PY) -m pytest -q -m "not slow and not models and not data"

DATA ?= ../shared/data

bench: $(STAMP)
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/batch_bench.py
	if test -d $(DATA)/ravdess-speech-16k; then $(PY) benchmarks/evaluate_packing.py --data $(DATA) --n 60; \
	else echo "evaluate_packing skipped: no $(DATA)/ravdess-speech-16k"; fi
	if test -d $(DATA)/urdu-16k; then $(PY) benchmarks/evaluate_packing.py --data $(DATA) --n 60 --corpus urdu; \
	else echo "evaluate_packing (2-s clips) skipped: no $(DATA)/urdu-16k"; fi
	if test -d $(DATA)/talking-heads; then $(PY) benchmarks/face_speed.py $(DATA)/talking-heads/*.mp4; \
	else echo "face_speed skipped: no $(DATA)/talking-heads"; fi

# Regenerate the lock from a working environment (maintainers only).
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v -E '^(torch|multimodal-ser)==' > requirements.lock

clean:
	rm -rf $(VENV) out bench_out
