package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// The pictures are hand-written SVG: line charts of one or more panels
// sharing the x axis, no dependency. A chart is a title, a subtitle (what
// was measured), panels, an x label and a footer (which binary, which
// machine, which command).

// point is one sample of a line.
type point struct{ x, y float64 }

// line is one series of a panel. With step set it is drawn as a filled
// histogram: each point is a bin starting at x, the next point's x ends it.
type line struct {
	name  string
	color string
	dash  bool
	step  bool
	pts   []point
}

// band shades an x range of every panel (an outage).
type band struct {
	from, to float64
	label    string
}

// mark is a labelled vertical line in one panel (a percentile).
type mark struct {
	x     float64
	label string
}

type panel struct {
	yLabel string
	yFmt   func(float64) string // tick labels; human when nil
	lines  []line
	marks  []mark
}

type chart struct {
	title, subtitle string
	xLabel          string
	xFmt            func(float64) string
	footer          []string
	bands           []band
	panels          []panel
}

const (
	svgWidth    = 800
	svgLeft     = 78
	svgRight    = 24
	svgTop      = 64
	svgPanelH   = 230
	svgPanelGap = 46
	svgBottom   = 56
)

// The colours of the subscribers, the same in every picture.
const (
	colorKeyrelay  = "#1f77b4"
	colorRedisCLI  = "#d62728"
	colorPublished = "#7f7f7f"
	colorBuffer    = "#2ca02c"
)

// write renders the chart into path (creating its directory).
func (c *chart) write(path string) error {
	var b bytes.Buffer
	c.render(&b)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func (c *chart) render(b *bytes.Buffer) {
	subtitle := wrap(c.subtitle, 108)
	var footer []string
	for _, f := range c.footer {
		footer = append(footer, wrap(f, 125)...)
	}
	plotW := float64(svgWidth - svgLeft - svgRight)
	// Each panel has its legend above it, in rows of entries.
	legends := make([][][]line, len(c.panels))
	tops := make([]int, len(c.panels))
	y := svgTop + 16*(len(subtitle)-1)
	for i, p := range c.panels {
		legends[i] = legendRows(p.lines, plotW)
		y += legendRowH * len(legends[i])
		tops[i] = y
		y += svgPanelH + svgPanelGap
	}
	height := y - svgPanelGap + svgBottom + 14*len(footer)
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n",
		svgWidth, height, svgWidth, height)
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", svgWidth, height)
	fmt.Fprintf(b, `<text x="%d" y="22" font-size="16" font-weight="bold">%s</text>`+"\n", svgLeft, esc(c.title))
	for i, l := range subtitle {
		fmt.Fprintf(b, `<text x="%d" y="%d" fill="#444">%s</text>`+"\n", svgLeft, 42+16*i, esc(l))
	}

	xmin, xmax := math.Inf(1), math.Inf(-1)
	for _, p := range c.panels {
		for _, l := range p.lines {
			for _, pt := range l.pts {
				xmin, xmax = math.Min(xmin, pt.x), math.Max(xmax, pt.x)
			}
		}
	}
	for _, bd := range c.bands {
		xmin, xmax = math.Min(xmin, bd.from), math.Max(xmax, bd.to)
	}
	if math.IsInf(xmin, 0) {
		xmin, xmax = 0, 1
	}
	xmin = math.Min(xmin, 0)
	xticks := ticks(xmax - xmin)
	xmax = xmin + xticks[len(xticks)-1]
	if xmax <= xmin {
		xmax = xmin + 1
	}
	xfmt := c.xFmt
	if xfmt == nil {
		xfmt = human
	}
	sx := func(x float64) float64 { return svgLeft + (x-xmin)/(xmax-xmin)*plotW }

	for i, p := range c.panels {
		top := float64(tops[i])
		bottom := top + svgPanelH
		ymax := 0.0
		for _, l := range p.lines {
			for _, pt := range l.pts {
				ymax = math.Max(ymax, pt.y)
			}
		}
		yticks := ticks(ymax)
		ytop := yticks[len(yticks)-1]
		if ytop <= 0 {
			ytop = 1
		}
		sy := func(y float64) float64 { return bottom - y/ytop*svgPanelH }
		yfmt := p.yFmt
		if yfmt == nil {
			yfmt = human
		}
		for _, bd := range c.bands {
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="#f3d9d9"/>`+"\n",
				sx(bd.from), top, sx(bd.to)-sx(bd.from), svgPanelH)
			if i == 0 && bd.label != "" {
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#a33" text-anchor="middle">%s</text>`+"\n",
					(sx(bd.from)+sx(bd.to))/2, top+14, esc(bd.label))
			}
		}
		for _, t := range yticks {
			y := sy(t)
			fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e5e5e5"/>`+"\n", svgLeft, y, svgWidth-svgRight, y)
			fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" fill="#444">%s</text>`+"\n", svgLeft-6, y+4, esc(yfmt(t)))
		}
		for _, t := range xticks {
			x := sx(xmin + t)
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999"/>`+"\n", x, bottom, x, bottom+4)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#444">%s</text>`+"\n", x, bottom+17, esc(xfmt(xmin+t)))
		}
		fmt.Fprintf(b, `<rect x="%d" y="%.1f" width="%.1f" height="%d" fill="none" stroke="#999"/>`+"\n", svgLeft, top, plotW, svgPanelH)
		fmt.Fprintf(b, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle" fill="#222">%s</text>`+"\n",
			top+svgPanelH/2, esc(p.yLabel))
		for _, l := range p.lines {
			if len(l.pts) == 0 {
				continue
			}
			var d strings.Builder
			if l.step {
				fmt.Fprintf(&d, "M%.1f %.1f", sx(l.pts[0].x), sy(0))
				for j, pt := range l.pts {
					end := pt.x
					if j+1 < len(l.pts) {
						end = l.pts[j+1].x
					}
					fmt.Fprintf(&d, " L%.1f %.1f L%.1f %.1f", sx(pt.x), sy(pt.y), sx(end), sy(pt.y))
				}
				fmt.Fprintf(&d, " L%.1f %.1f Z", sx(l.pts[len(l.pts)-1].x), sy(0))
				fmt.Fprintf(b, `<path d="%s" fill="%s" fill-opacity="0.35" stroke="%s" stroke-width="1"/>`+"\n", d.String(), l.color, l.color)
				continue
			}
			for j, pt := range l.pts {
				cmd := "L"
				if j == 0 {
					cmd = "M"
				}
				fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, sx(pt.x), sy(pt.y))
			}
			dash := ""
			if l.dash {
				dash = ` stroke-dasharray="6 4"`
			}
			fmt.Fprintf(b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.TrimSpace(d.String()), l.color, dash)
		}
		for _, m := range p.marks {
			x := sx(m.x)
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222" stroke-dasharray="3 3"/>`+"\n", x, top, x, bottom)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#222">%s</text>`+"\n", x+4, top+30, esc(m.label))
		}
		// Legend above the panel.
		ly := top - float64(legendRowH*len(legends[i])) - 2
		for _, row := range legends[i] {
			lx := float64(svgLeft)
			for _, l := range row {
				dash := ""
				if l.dash {
					dash = ` stroke-dasharray="6 4"`
				}
				fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n",
					lx, ly+8, lx+24, ly+8, l.color, dash)
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#222">%s</text>`+"\n", lx+30, ly+12, esc(l.name))
				lx += legendWidth(l)
			}
			ly += legendRowH
		}
		if i == len(c.panels)-1 {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#222">%s</text>`+"\n",
				svgLeft+plotW/2, bottom+36, esc(c.xLabel))
		}
	}
	fy := float64(height - 14*len(footer) - 6)
	for _, f := range footer {
		fmt.Fprintf(b, `<text x="%d" y="%.1f" font-size="10" fill="#666">%s</text>`+"\n", svgLeft, fy+10, esc(f))
		fy += 14
	}
	b.WriteString("</svg>\n")
}

// legendRowH is the height of one row of a legend.
const legendRowH = 18

// legendWidth is the room one legend entry takes: its sample line, its
// name (about 6.5 px a character at 12 px) and a space.
func legendWidth(l line) float64 { return 30 + 6.5*float64(len([]rune(l.name))) + 18 }

// legendRows packs the entries into rows no wider than w.
func legendRows(lines []line, w float64) [][]line {
	var rows [][]line
	used := w
	for _, l := range lines {
		if lw := legendWidth(l); used+lw > w && used > 0 {
			rows = append(rows, nil)
			used = 0
		}
		rows[len(rows)-1] = append(rows[len(rows)-1], l)
		used += legendWidth(l)
	}
	return rows
}

// wrap breaks s at spaces into lines of at most n characters (a word
// longer than n gets a line of its own).
func wrap(s string, n int) []string {
	var out []string
	var cur []rune
	for _, w := range strings.Fields(s) {
		if len(cur) > 0 && len(cur)+1+len([]rune(w)) > n {
			out = append(out, string(cur))
			cur = cur[:0]
		}
		if len(cur) > 0 {
			cur = append(cur, ' ')
		}
		cur = append(cur, []rune(w)...)
	}
	if len(cur) > 0 || len(out) == 0 {
		out = append(out, string(cur))
	}
	return out
}

// ticks returns 0 and the multiples of a round step (1, 2 or 5 × 10^k) up
// to the first at or above max: the smallest such step that needs at most
// 8 intervals.
func ticks(max float64) []float64 {
	if max <= 0 || math.IsNaN(max) || math.IsInf(max, 0) {
		return []float64{0, 1}
	}
	mag := math.Pow(10, math.Floor(math.Log10(max/8)))
	step := 10 * mag
	for _, m := range []float64{1, 2, 5} {
		if math.Ceil(max/(m*mag)-1e-9) <= 8 {
			step = m * mag
			break
		}
	}
	var out []float64
	for v := 0.0; ; v += step {
		out = append(out, v)
		if v >= max-step*1e-9 {
			return out
		}
	}
}

// human formats a tick: 1.5M, 250k, 12, 0.5.
func human(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return trimZero(fmt.Sprintf("%.2f", v/1e6)) + "M"
	case a >= 1e3:
		return trimZero(fmt.Sprintf("%.1f", v/1e3)) + "k"
	default:
		return trimZero(fmt.Sprintf("%.2f", v))
	}
}

func trimZero(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

var svgEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")

func esc(s string) string { return svgEscaper.Replace(s) }
