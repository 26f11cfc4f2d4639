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

// The second plot (`wsedge bench plot --open`) is connections open over
// time: one line per run from its OpenTimeline, seconds since the run
// began on x, connections on y (linear).

type openLayout struct {
	title  string
	ss     []series // xs: seconds, ys: connections
	xTicks []float64
	yTicks []float64
	px, py func(float64) float64
}

func newOpenLayout(rs []*Result, title string) (*openLayout, error) {
	if len(rs) == 0 {
		return nil, errors.New("bench: nothing to plot")
	}
	lo := &openLayout{title: title}
	if lo.title == "" {
		lo.title = "Connections open"
	}
	maxT, maxY := 0.0, 0.0
	for i, r := range rs {
		if len(r.OpenTimeline) == 0 {
			continue
		}
		label := r.Label
		if label == "" {
			label = fmt.Sprintf("run %d", i+1)
		}
		s := series{label: label}
		for _, p := range r.OpenTimeline {
			s.xs = append(s.xs, p.T)
			s.ys = append(s.ys, float64(p.Open))
			maxT = math.Max(maxT, p.T)
			maxY = math.Max(maxY, float64(p.Open))
		}
		lo.ss = append(lo.ss, s)
	}
	if len(lo.ss) == 0 {
		return nil, errors.New("bench: no connection timeline to plot (results before open_timeline, or connect mode)")
	}
	xTop, xStep := niceMax(maxT)
	yTop, yStep := niceMax(maxY)
	for x := 0.0; x <= xTop+xStep/2; x += xStep {
		lo.xTicks = append(lo.xTicks, x)
	}
	for y := 0.0; y <= yTop+yStep/2; y += yStep {
		lo.yTicks = append(lo.yTicks, y)
	}
	lo.px = func(x float64) float64 { return padL + x/xTop*iw }
	lo.py = func(y float64) float64 { return padT + ih - y/yTop*ih }
	return lo, nil
}

// fmtCount writes a connection count short: 950, 19k, 1.2M.
func fmtCount(v float64) string {
	switch {
	case v >= 1e6:
		return strings.TrimSuffix(fmt.Sprintf("%.2f", v/1e6), ".00") + "M"
	case v >= 1e3:
		return fmt.Sprintf("%gk", math.Round(v/100)/10)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// PlotOpenSVG writes connections open over time of rs as SVG.
func PlotOpenSVG(w io.Writer, rs []*Result, title string) error {
	lo, err := newOpenLayout(rs, title)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", plotW, plotH, plotW, plotH)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	fmt.Fprintf(&b, `<text x="%d" y="28" font-size="17" font-weight="bold">%s</text>`+"\n", padL, html.EscapeString(lo.title))
	for _, y := range lo.yTicks {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, padL, plotW-padR, lo.py(y), lo.py(y))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, lo.py(y)+4, fmtCount(y))
	}
	for _, x := range lo.xTicks {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#ddd"/>`, lo.px(x), lo.px(x), padT, plotH-padB)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%gs</text>`+"\n", lo.px(x), plotH-padB+18, x)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#444"/>`+"\n", padL, padT, iw, ih)
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">seconds since the run began</text>`+"\n", padL+iw/2, plotH-padB+38)
	fmt.Fprintf(&b, `<text transform="translate(18 %.0f) rotate(-90)" text-anchor="middle">connections open</text>`+"\n", padT+ih/2)
	for i, s := range lo.ss {
		col := palette[i%len(palette)]
		b.WriteString(`<polyline fill="none" stroke-width="2" stroke="` + col + `" points="`)
		for k := range s.xs {
			fmt.Fprintf(&b, "%.1f,%.1f ", lo.px(s.xs[k]), lo.py(s.ys[k]))
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

// PlotOpenPNG writes the same plot as a PNG image.
func PlotOpenPNG(w io.Writer, rs []*Result, title string) error {
	lo, err := newOpenLayout(rs, title)
	if err != nil {
		return err
	}
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	grid := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	ink := color.RGBA{0x22, 0x22, 0x22, 0xff}
	ascii := strings.NewReplacer("×", "x", "→", "->", "…", "...")
	text := func(x, y int, s string, align int) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(ink), Face: basicfont.Face7x13}
		s = ascii.Replace(s)
		wd := d.MeasureString(s).Round()
		d.Dot = fixed.P(x-wd*align/2, y)
		d.DrawString(s)
	}
	text(padL, 20, lo.title, 0)
	for _, y := range lo.yTicks {
		line(img, padL, lo.py(y), plotW-padR, lo.py(y), grid, 1)
		text(padL-6, int(lo.py(y))+4, fmtCount(y), 2)
	}
	for _, x := range lo.xTicks {
		line(img, lo.px(x), padT, lo.px(x), plotH-padB, grid, 1)
		text(int(lo.px(x)), plotH-padB+18, fmt.Sprintf("%gs", x), 1)
	}
	for _, r := range [][4]float64{{padL, padT, plotW - padR, padT}, {padL, plotH - padB, plotW - padR, plotH - padB},
		{padL, padT, padL, plotH - padB}, {plotW - padR, padT, plotW - padR, plotH - padB}} {
		line(img, r[0], r[1], r[2], r[3], ink, 1)
	}
	text(padL+int(iw/2), plotH-padB+38, "seconds since the run began", 1)
	text(8, padT-8, "connections open", 0)
	for i, s := range lo.ss {
		col := parseHex(palette[i%len(palette)])
		for k := 1; k < len(s.xs); k++ {
			line(img, lo.px(s.xs[k-1]), lo.py(s.ys[k-1]), lo.px(s.xs[k]), lo.py(s.ys[k]), col, 2)
		}
		lx := padL + (i%3)*260
		ly := plotH - padB + 62 + (i/3)*20
		line(img, float64(lx), float64(ly-4), float64(lx+24), float64(ly-4), col, 3)
		text(lx+30, ly, s.label, 0)
	}
	return png.Encode(w, img)
}
