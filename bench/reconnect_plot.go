package bench

import (
	"errors"
	"fmt"
	"html"
	"io"
	"strings"
)

// PlotReconnectSVG draws reconnect-storm runs: reconnects per bin against
// the time since the SIGTERM, one line per run, so a run with the drain's
// reconnect spread and one without compare on the same axes.
func PlotReconnectSVG(w io.Writer, rs []*ReconnectResult, title string) error {
	if len(rs) == 0 {
		return errors.New("bench: nothing to plot")
	}
	const (
		width, height          = 900, 480
		left, right, top, bott = 70, 20, 50, 90
	)
	iw, ih := float64(width-left-right), float64(height-top-bott)
	binMs := rs[0].BinMs
	bins, peak := 1, 1
	for _, r := range rs {
		if r.BinMs != binMs {
			return fmt.Errorf("bench: runs with bins of %v and %v ms", binMs, r.BinMs)
		}
		bins = max(bins, len(r.Reconnects))
		peak = max(peak, r.Peak)
	}
	ymax, ystep := niceMax(float64(peak))
	secs := float64(bins) * binMs / 1000
	xmax, xstep := niceMax(secs)
	px := func(s float64) float64 { return float64(left) + iw*s/xmax }
	py := func(v float64) float64 { return float64(top) + ih*(1-v/ymax) }
	if title == "" {
		title = fmt.Sprintf("reconnects per %.0f ms after SIGTERM (%d clients)", binMs, rs[0].Conns)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", width, height, width, height)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	fmt.Fprintf(&b, `<text x="%d" y="28" font-size="17" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	for y := 0.0; y <= ymax+ystep/2; y += ystep {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, left, width-right, py(y), py(y))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, py(y)+4, y)
	}
	for x := 0.0; x <= xmax+xstep/2; x += xstep {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#ddd"/>`, px(x), px(x), top, height-bott)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%gs</text>`+"\n", px(x), height-bott+18, x)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#444"/>`+"\n", left, top, iw, ih)
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">time since SIGTERM</text>`+"\n", float64(left)+iw/2, height-bott+38)
	fmt.Fprintf(&b, `<text transform="translate(18 %.0f) rotate(-90)" text-anchor="middle">reconnects per %.0f ms</text>`+"\n", float64(top)+ih/2, binMs)
	for i, r := range rs {
		col := palette[i%len(palette)]
		b.WriteString(`<polyline fill="none" stroke-width="1.5" stroke="` + col + `" points="`)
		for k, v := range r.Reconnects {
			x0, x1 := float64(k)*binMs/1000, float64(k+1)*binMs/1000
			fmt.Fprintf(&b, "%.1f,%.1f %.1f,%.1f ", px(x0), py(float64(v)), px(x1), py(float64(v)))
		}
		b.WriteString("\"/>\n")
		label := r.Label
		if label == "" {
			label = fmt.Sprintf("run %d", i+1)
		}
		label = fmt.Sprintf("%s: peak %d, all back in %.1f s", label, r.Peak, r.LastMs/1000)
		lx, ly := left+(i%2)*400, height-bott+62+(i/2)*20
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="3"/>`, lx, lx+24, ly-4, ly-4, col)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", lx+30, ly, html.EscapeString(label))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
