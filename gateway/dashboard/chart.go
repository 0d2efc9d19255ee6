package dashboard

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
)

// Bar is one bar of a chart.
type Bar struct {
	Label string
	Value float64
	// Note is shown after the value (e.g. "42 %"); empty: none.
	Note string
}

// BarChart is a horizontal bar chart rendered on the server as inline
// SVG: no script, no chart library, no third-party request. Values are
// printed beside their bars, so the figures are readable without the
// graphics (and by screen readers, through the table fallback).
type BarChart struct {
	// Title names the chart for assistive technology.
	Title string
	Bars  []Bar
	// Unit formats values: "" for counts, "s" for seconds.
	Unit string
}

const (
	chartWidth  = 480
	labelWidth  = 190
	valueWidth  = 100
	barHeight   = 22
	barGap      = 8
	chartMargin = 4
)

// SVG renders the chart. Every text it writes is escaped.
func (c BarChart) SVG() template.HTML {
	if len(c.Bars) == 0 {
		return template.HTML(`<p class="empty">No data yet.</p>`)
	}
	maxV := 0.0
	for _, b := range c.Bars {
		maxV = math.Max(maxV, b.Value)
	}
	h := chartMargin*2 + len(c.Bars)*(barHeight+barGap) - barGap
	span := float64(chartWidth - labelWidth - valueWidth)
	var s strings.Builder
	fmt.Fprintf(&s, `<svg class="chart" viewBox="0 0 %d %d" width="100%%" role="img" aria-labelledby="%s"><title id="%s">%s</title>`,
		chartWidth, h, c.id(), c.id(), template.HTMLEscapeString(c.Title))
	for i, b := range c.Bars {
		y := chartMargin + i*(barHeight+barGap)
		w := 0.0
		if maxV > 0 {
			w = b.Value / maxV * span
		}
		if b.Value > 0 && w < 2 {
			w = 2 // a non-zero value stays visible
		}
		label := b.Label
		if r := []rune(label); len(r) > 23 {
			label = string(r[:22]) + "…"
		}
		fmt.Fprintf(&s, `<text class="label" x="%d" y="%d">%s</text>`, labelWidth-8, y+barHeight-6, template.HTMLEscapeString(label))
		fmt.Fprintf(&s, `<rect class="bar" x="%d" y="%d" width="%.1f" height="%d" data-value="%s"></rect>`, labelWidth, y, w, barHeight, c.format(b.Value))
		value := c.format(b.Value)
		if b.Note != "" {
			value += " · " + b.Note
		}
		fmt.Fprintf(&s, `<text class="value" x="%.1f" y="%d">%s</text>`, float64(labelWidth)+w+6, y+barHeight-6, template.HTMLEscapeString(value))
	}
	s.WriteString(`</svg>`)
	return template.HTML(s.String())
}

func (c BarChart) id() string {
	var b strings.Builder
	b.WriteString("chart-")
	for _, r := range strings.ToLower(c.Title) {
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
			b.WriteRune(r)
		} else if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

func (c BarChart) format(v float64) string {
	switch c.Unit {
	case "s":
		if v < 1 {
			return strconv.FormatFloat(v*1000, 'f', 0, 64) + " ms"
		}
		return strconv.FormatFloat(v, 'f', 2, 64) + " s"
	}
	if v == math.Trunc(v) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
