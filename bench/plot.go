package bench

import (
	"errors"
	"fmt"
	"html"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// The plot is the usual HDR "latency by percentile distribution": the x axis
// is the percentile on a scale that gives each extra nine the same width
// (x = log10(1/(1-q))), the y axis the latency. Every run is one line.

// series is one run's curve.
type series struct {
	label string
	xs    []float64 // nines: 0 = p0, 1 = p90, 2 = p99, …
	ys    []float64 // milliseconds
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// plotSeries turns results into curves. The last point of each is its max.
func plotSeries(rs []*Result) ([]series, float64, error) {
	if len(rs) == 0 {
		return nil, 0, errors.New("bench: nothing to plot")
	}
	var out []series
	maxNines := 1.0
	type curve struct{ label, hist string }
	var curves []curve
	for i, r := range rs {
		label := r.Label
		if label == "" {
			label = fmt.Sprintf("run %d", i+1)
		}
		curves = append(curves, curve{fmt.Sprintf("%s (%s)", label, r.Mode), r.LatencyHist})
		if e := r.Everyone; e != nil {
			curves = append(curves, curve{fmt.Sprintf("%s (everyone %s)", label, e.Channel), e.LatencyHist})
		}
	}
	for _, cv := range curves {
		h, err := decodeHist(cv.hist)
		if err != nil {
			return nil, 0, err
		}
		if h.TotalCount() == 0 {
			continue
		}
		label := cv.label
		// Beyond log10(count) nines the histogram has no more to say.
		top := math.Min(math.Log10(float64(h.TotalCount())), 6)
		if top < 1 {
			top = 1
		}
		maxNines = math.Max(maxNines, top)
		s := series{label: label}
		const steps = 240
		for k := 0; k <= steps; k++ {
			x := top * float64(k) / steps
			q := 100 * (1 - math.Pow(10, -x))
			s.xs = append(s.xs, x)
			s.ys = append(s.ys, float64(h.ValueAtQuantile(q))/1e6)
		}
		s.xs = append(s.xs, top)
		s.ys = append(s.ys, float64(h.Max())/1e6)
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, 0, errors.New("bench: no latency samples to plot")
	}
	return out, math.Ceil(maxNines), nil
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten, and returns the
// tick step.
func niceMax(v float64) (top, step float64) {
	if v <= 0 {
		return 1, 0.2
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p, m * p / 5
		}
	}
	return 10 * p, 2 * p
}

func ninesLabel(n int) string {
	if n == 0 {
		return "0%"
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.*f", n, 100*(1-math.Pow(10, -float64(n)))), "0"), ".") + "%"
}

func fmtMs(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 0.01:
		return fmt.Sprintf("%.0fµs", v*1000)
	case v < 1:
		return fmt.Sprintf("%.2gms", v)
	case v < 1000:
		return fmt.Sprintf("%gms", math.Round(v*100)/100)
	default:
		return fmt.Sprintf("%gs", math.Round(v/10)/100)
	}
}

// yAxis maps latency (ms) to the plot's height. When the curves span more
// than two decades a log scale keeps the fast ones readable beside the slow.
type yAxis struct {
	log    bool
	lo, hi float64
	ticks  []float64
}

func newYAxis(ss []series) yAxis {
	lo, hi := math.Inf(1), 0.0
	for _, s := range ss {
		for _, y := range s.ys {
			hi = math.Max(hi, y)
			if y > 0 {
				lo = math.Min(lo, y)
			}
		}
	}
	if hi > 0 && lo < math.Inf(1) && hi/lo > 100 {
		a := yAxis{log: true, lo: math.Pow(10, math.Floor(math.Log10(lo))), hi: math.Pow(10, math.Ceil(math.Log10(hi)))}
		for d := a.lo; d <= a.hi*1.001; d *= 10 {
			a.ticks = append(a.ticks, d)
		}
		return a
	}
	top, step := niceMax(hi)
	a := yAxis{lo: 0, hi: top}
	for y := 0.0; y <= top+step/2; y += step {
		a.ticks = append(a.ticks, y)
	}
	return a
}

// frac returns where y sits between the bottom (0) and the top (1).
func (a yAxis) frac(y float64) float64 {
	if !a.log {
		return y / a.hi
	}
	if y < a.lo {
		y = a.lo
	}
	return math.Log10(y/a.lo) / math.Log10(a.hi/a.lo)
}

// geometry shared by the renderers.
const (
	plotW, plotH           = 900, 540
	padL, padR, padT, padB = 80, 30, 50, 110
	// iw and ih are the plot area inside the padding.
	iw, ih = float64(plotW - padL - padR), float64(plotH - padT - padB)
)

// plotLayout is what both renderers share: the series, the axes and the
// mapping from (nines, latency) to pixels.
func plotLayout(rs []*Result, title string) (ss []series, nines float64, ya yAxis, px, py func(float64) float64, _ string, err error) {
	ss, nines, err = plotSeries(rs)
	if err != nil {
		return nil, 0, ya, nil, nil, "", err
	}
	ya = newYAxis(ss)
	px = func(x float64) float64 { return padL + x/nines*iw }
	py = func(y float64) float64 { return padT + ih - ya.frac(y)*ih }
	if title == "" {
		title = "Latency by percentile"
	}
	return ss, nines, ya, px, py, title, nil
}

// PlotSVG writes the latency percentile distribution of rs as SVG.
func PlotSVG(w io.Writer, rs []*Result, title string) error {
	ss, nines, ya, px, py, title, err := plotLayout(rs, title)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", plotW, plotH, plotW, plotH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="28" font-size="17" font-weight="bold">%s</text>`+"\n", padL, html.EscapeString(title))
	for _, y := range ya.ticks {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, padL, plotW-padR, py(y), py(y))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, py(y)+4, fmtMs(y))
	}
	for n := 0; n <= int(nines); n++ {
		x := px(float64(n))
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#ddd"/>`, x, x, padT, plotH-padB)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, plotH-padB+18, ninesLabel(n))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#444"/>`+"\n", padL, padT, iw, ih)
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">percentile</text>`+"\n", padL+iw/2, plotH-padB+38)
	ylabel := "latency"
	if ya.log {
		ylabel += " (log scale)"
	}
	fmt.Fprintf(&b, `<text transform="translate(18 %.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", padT+ih/2, ylabel)
	for i, s := range ss {
		col := palette[i%len(palette)]
		b.WriteString(`<polyline fill="none" stroke-width="2" stroke="` + col + `" points="`)
		for k := range s.xs {
			fmt.Fprintf(&b, "%.1f,%.1f ", px(s.xs[k]), py(s.ys[k]))
		}
		b.WriteString("\"/>\n")
		lx := padL + (i%3)*260
		ly := plotH - padB + 62 + (i/3)*20
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="3"/>`, lx, lx+24, ly-4, ly-4, col)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", lx+30, ly, html.EscapeString(s.label))
	}
	b.WriteString("</svg>\n")
	_, err = io.WriteString(w, b.String())
	return err
}

// PlotPNG writes the same plot as a PNG image.
func PlotPNG(w io.Writer, rs []*Result, title string) error {
	ss, nines, ya, px, py, title, err := plotLayout(rs, title)
	if err != nil {
		return err
	}
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	grid := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	ink := color.RGBA{0x22, 0x22, 0x22, 0xff}
	text := func(x, y int, s string, align int) { // align: 0 left, 1 centre, 2 right
		d := font.Drawer{Dst: img, Src: image.NewUniform(ink), Face: basicfont.Face7x13}
		wd := d.MeasureString(s).Round()
		d.Dot = fixed.P(x-wd*align/2, y)
		d.DrawString(s)
	}
	// basicfont has Latin-1 only: spell the rest in ASCII.
	ascii := strings.NewReplacer("×", "x", "→", "->", "…", "...")
	text0 := text
	text = func(x, y int, s string, align int) {
		text0(x, y, ascii.Replace(s), align)
	}
	text(padL, 20, title, 0)
	for _, y := range ya.ticks {
		line(img, padL, py(y), plotW-padR, py(y), grid, 1)
		text(padL-6, int(py(y))+4, fmtMs(y), 2)
	}
	for n := 0; n <= int(nines); n++ {
		x := px(float64(n))
		line(img, x, padT, x, plotH-padB, grid, 1)
		text(int(x), plotH-padB+18, ninesLabel(n), 1)
	}
	for _, r := range [][4]float64{{padL, padT, plotW - padR, padT}, {padL, plotH - padB, plotW - padR, plotH - padB},
		{padL, padT, padL, plotH - padB}, {plotW - padR, padT, plotW - padR, plotH - padB}} {
		line(img, r[0], r[1], r[2], r[3], ink, 1)
	}
	text(padL+int(iw/2), plotH-padB+38, "percentile", 1)
	if ya.log {
		text(8, padT-8, "latency (log scale)", 0)
	} else {
		text(8, padT-8, "latency", 0)
	}
	for i, s := range ss {
		col := parseHex(palette[i%len(palette)])
		for k := 1; k < len(s.xs); k++ {
			line(img, px(s.xs[k-1]), py(s.ys[k-1]), px(s.xs[k]), py(s.ys[k]), col, 2)
		}
		lx := padL + (i%3)*260
		ly := plotH - padB + 62 + (i/3)*20
		line(img, float64(lx), float64(ly-4), float64(lx+24), float64(ly-4), col, 3)
		text(lx+30, ly, s.label, 0)
	}
	return png.Encode(w, img)
}

// line draws from (x0,y0) to (x1,y1) with a square brush of width wd.
func line(img *image.RGBA, x0, y0, x1, y1 float64, c color.RGBA, wd int) {
	n := int(math.Max(math.Abs(x1-x0), math.Abs(y1-y0))) + 1
	for i := 0; i <= n; i++ {
		t := float64(i) / float64(n)
		x := int(math.Round(x0 + (x1-x0)*t))
		y := int(math.Round(y0 + (y1-y0)*t))
		for dx := 0; dx < wd; dx++ {
			for dy := 0; dy < wd; dy++ {
				img.SetRGBA(x+dx-wd/2, y+dy-wd/2, c)
			}
		}
	}
}

func parseHex(s string) color.RGBA {
	var r, g, b uint8
	_, _ = fmt.Sscanf(s, "#%02x%02x%02x", &r, &g, &b)
	return color.RGBA{r, g, b, 0xff}
}
