// The messages every permessage-deflate interop client sends (echo.mjs
// here, deflate.js in ../browser): a deterministic mix of chat-like JSON
// (compresses well), runs of one letter (compresses extremely), printable
// noise, and random bytes as binary (does not compress: the server answers
// those uncompressed), with sizes around deflate's block and window
// boundaries and up to 200 KB.
export function messages(count, seed) {
  let s = seed >>> 0;
  const rnd = () => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = (n) => Math.floor(rnd() * n);
  const sizes = [0, 1, 127, 128, 129, 1024, 16383, 16384, 16385, 32767, 32768, 32769, 65535, 65536, 65537];
  const words = ['{"channel":"chat:room42",', '"offset":', '"data":{"text":"', 'hello', ' world', '"}}', '"user":"alice",'];
  const out = [];
  for (let i = 0; i < count; i++) {
    const n = pick(2) ? sizes[pick(sizes.length)] : pick(200000);
    const kind = i % 4;
    if (kind === 3) {
      const b = new Uint8Array(n);
      for (let j = 0; j < n; j++) b[j] = pick(256);
      out.push({ binary: true, data: b });
      continue;
    }
    let t = '';
    while (t.length < n) {
      if (kind === 0) t += words[pick(words.length)];
      else if (kind === 1) t += 'x'.repeat(Math.min(n - t.length, 4096));
      else t += String.fromCharCode(32 + pick(95));
    }
    out.push({ binary: false, data: t.slice(0, n) });
  }
  return out;
}
