package bench

import (
	"fmt"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in nanoseconds from 1 µs to 60 s with 3
// significant digits: 0.1% resolution at every scale.
const (
	histLowest  = 1_000
	histHighest = 60_000_000_000
	histDigits  = 3
)

func newHist() *hdr.Histogram { return hdr.New(histLowest, histHighest, histDigits) }

// record adds v (ns), clamped into the trackable range so no sample is lost.
func record(h *hdr.Histogram, v int64) {
	if v < histLowest {
		v = histLowest
	} else if v > histHighest {
		v = histHighest
	}
	_ = h.RecordValue(v) // cannot fail once clamped
}

// encodeHist returns the V2 compressed (base64) form of h: lossless, so
// histograms from several processes merge exactly.
func encodeHist(h *hdr.Histogram) string {
	b, err := h.Encode(hdr.V2CompressedEncodingCookieBase)
	if err != nil {
		panic(fmt.Sprintf("BUG: encoding histogram: %v", err))
	}
	return string(b)
}

// decodeHist is the inverse of encodeHist; "" decodes to an empty histogram.
func decodeHist(s string) (*hdr.Histogram, error) {
	if s == "" {
		return newHist(), nil
	}
	h, err := hdr.Decode([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("bench: decoding histogram: %w", err)
	}
	return h, nil
}

// mergeEncoded merges the encoded histograms into one.
func mergeEncoded(encoded ...string) (*hdr.Histogram, error) {
	out := newHist()
	for _, e := range encoded {
		h, err := decodeHist(e)
		if err != nil {
			return nil, err
		}
		if dropped := out.Merge(h); dropped != 0 {
			return nil, fmt.Errorf("bench: merge dropped %d samples", dropped)
		}
	}
	return out, nil
}

// Summary is a latency distribution in microseconds; a plain value.
type Summary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p99_9_us"`
	Max   float64 `json:"max_us"`
}

func summarize(h *hdr.Histogram) Summary {
	if h.TotalCount() == 0 {
		return Summary{}
	}
	us := func(v int64) float64 { return float64(v) / 1e3 }
	return Summary{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1e3,
		P50:   us(h.ValueAtQuantile(50)),
		P90:   us(h.ValueAtQuantile(90)),
		P99:   us(h.ValueAtQuantile(99)),
		P999:  us(h.ValueAtQuantile(99.9)),
		Max:   us(h.Max()),
	}
}
