// Patch info mining, drawn: each low-res token (a cell of the G x G grid over the padded square
// image) attended over its own S x S window of the high-res map. "where" shades each window's
// S x S sub-cells by that token's attention (relative to its strongest pixel); "focus" shades each
// cell by how concentrated its attention was (1 - entropy / log(S*S)).

/// Alpha of a sub-cell with relative weight `v` in [0, 1].
export const alphaOf = (v) => Math.round(255 * 0.6 * v);

/// Draws the image as the model saw it: padded to a square with MGM's mean colour.
export function drawPhoto(canvas, bitmap, size = 336) {
  canvas.width = canvas.height = size;
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = 'rgb(122,116,104)';
  ctx.fillRect(0, 0, size, size);
  const scale = size / Math.max(bitmap.width, bitmap.height);
  const [w, h] = [bitmap.width * scale, bitmap.height * scale];
  ctx.drawImage(bitmap, (size - w) / 2, (size - h) / 2, w, h);
}

/// `mining`: { tokens, window, attention: Float32Array [tokens, window²] }.
export function drawMining(canvas, mining, mode = 'where') {
  const { tokens, window: s, attention } = mining;
  const grid = Math.round(Math.sqrt(tokens));
  const side = grid * s;
  canvas.width = canvas.height = side; // one canvas pixel per high-res window pixel
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(side, side);
  const logM = Math.log(s * s);
  for (let t = 0; t < tokens; t++) {
    const row = attention.subarray(t * s * s, (t + 1) * s * s);
    const max = row.reduce((m, v) => Math.max(m, v), 0) || 1;
    const entropy = -row.reduce((h, v) => (v > 0 ? h + v * Math.log(v) : h), 0);
    const focus = logM > 0 ? 1 - entropy / logM : 1;
    const [cy, cx] = [Math.floor(t / grid) * s, (t % grid) * s];
    for (let m = 0; m < s * s; m++) {
      const v = mode === 'focus' ? focus : row[m] / max;
      const p = ((cy + Math.floor(m / s)) * side + cx + (m % s)) * 4;
      img.data[p] = 255;
      img.data[p + 1] = Math.round(200 * (1 - v));
      img.data[p + 2] = 0;
      img.data[p + 3] = alphaOf(v);
    }
  }
  ctx.putImageData(img, 0, 0);
}
