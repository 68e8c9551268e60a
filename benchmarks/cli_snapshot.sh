#!/usr/bin/env bash
# Every command's output files on fixed seeds (tiny 2D and 3D experiments, fixed step counts),
# to compare two revisions file by file. Usage:
#   benchmarks/cli_snapshot.sh OUT_DIR            # with .venv/bin/deepsmlm
#   DEEPSMLM="env PYTHONPATH=/path/to/other/src .venv/bin/python -m deepsmlm.cli" \
#     benchmarks/cli_snapshot.sh OUT_DIR2         # another checkout's code
#   diff -r OUT_DIR OUT_DIR2                      # paths, timings and model.json's format differ
set -e
D=$(realpath -m "${1:?out dir}"); rm -rf "$D"; mkdir -p "$D"
cd "$(dirname "$0")/.."
B="${DEEPSMLM:-.venv/bin/deepsmlm}"
export OMP_NUM_THREADS=1
cat > $D/tiny2d.yaml <<'Y'
frame: {height_px: 32, width_px: 32}
optics: {psf: gaussian, pixel_size_nm: 100}
emitters: {density_per_um2: 1.0, photons: {lo: 1500, hi: 3000}}
background: {photons_per_px: [20, 20]}
training: {upsampling: 4, channels: [4, 8, 8, 8], patch_px: 16, batch_size: 4, steps_per_epoch: 3, max_epochs: 2, val_frames: 8, seed: 1}
Y
cat > $D/tiny3d.yaml <<'Y'
frame: {height_px: 32, width_px: 32}
optics: {psf: astigmatic-gaussian, pixel_size_nm: 100}
emitters: {density_per_um2: 0.5, z_range_nm: [-400, 400], photons: {lo: 2000, hi: 4000}}
background: {photons_per_px: [20, 20]}
training: {model: deepstorm3d, upsampling: 2, depth_planes: 4, width: 8, dilations: [1, 2, 1], patch_px: 16, batch_size: 4, steps_per_epoch: 3, max_epochs: 2, val_frames: 8, seed: 2, target_encoding: trilinear}
Y
for k in 2d 3d; do
  $B simulate $D/tiny$k.yaml --frames 6 --out $D/sim$k --seed 4 > $D/log_sim$k.txt
  $B train $D/tiny$k.yaml --out $D/model$k --quiet | sed 's/in [0-9.]* min/in X min/' > $D/log_train$k.txt
  $B localize $D/model$k $D/sim$k/frames.tif --out $D/loc$k --quiet | sed 's/[0-9.]* frames\/s/X frames\/s/' > $D/log_loc$k.txt
  $B evaluate $D/loc$k/localizations.csv $D/sim$k/truth.csv --json $D/eval$k.json > $D/log_eval$k.txt
  $B render $D/loc$k/localizations.csv --pixel-nm 20 --out $D/render$k.tif > $D/log_render$k.txt
  $B frc $D/sim$k/truth.csv --pixel-nm 20 --out $D/frc$k > $D/log_frc$k.txt 2>&1 || true
  $B psf $D/tiny$k.yaml --out $D/psf$k > $D/log_psf$k.txt
  $B crlb $D/tiny$k.yaml --photons 2000 --background 20 --out $D/crlb$k > $D/log_crlb$k.txt
  $B estimate $D/sim$k/frames.tif > $D/log_est$k.txt
done
$B design configs/design-4um.yaml --objective crlb --out $D/design --quiet > $D/log_design.txt 2>&1 || echo "design failed" >> $D/log_design.txt
