package bench

import (
	"fmt"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

// Panel is one chart of the PNG: a latency distribution per peer.
type Panel struct {
	Title string
	Peers []string           // legend names, in order
	Hists [][]dnsload.Bucket // one merged histogram per peer
}

// Tail returns the complementary distribution of a histogram as a step
// line: for each bucket, the fraction of lookups slower than it, in ms.
// It ends where nothing is slower (a log axis has no zero).
func Tail(h []dnsload.Bucket) plotter.XYs {
	var total uint64
	for _, b := range h {
		total += b.Count
	}
	if total == 0 {
		return nil
	}
	ms := func(us uint64) float64 { return math.Max(float64(us)/1e3, 1e-3) }
	var xys plotter.XYs
	above := total
	for _, b := range h {
		if above < total {
			xys = append(xys, plotter.XY{X: ms(b.LoUS), Y: float64(above) / float64(total)})
		}
		above -= b.Count
		if above == 0 {
			break
		}
		xys = append(xys, plotter.XY{X: ms(b.HiUS + 1), Y: float64(above) / float64(total)})
	}
	return xys
}

// WriteChart draws the panels side by side as a PNG: latency on a log x
// axis, the fraction of lookups slower than it on a log y axis, so the
// median, the tail and the 5 s stalls all show.
func WriteChart(w io.Writer, panels []Panel) error {
	if len(panels) == 0 {
		return fmt.Errorf("no latency data to chart")
	}
	row := make([]*plot.Plot, len(panels))
	for i, pn := range panels {
		p := plot.New()
		p.Title.Text = pn.Title
		p.X.Label.Text = "latency (ms)"
		p.Y.Label.Text = "fraction of lookups slower"
		p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
		p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
		p.Legend.Top = true
		p.Add(plotter.NewGrid())
		for j, name := range pn.Peers {
			xys := Tail(pn.Hists[j])
			if len(xys) == 0 {
				continue
			}
			l, err := plotter.NewLine(xys)
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(j)
			l.Width = vg.Points(1.5)
			l.Dashes = plotutil.Dashes(j)
			p.Add(l)
			p.Legend.Add(name, l)
		}
		row[i] = p
	}
	img := vgimg.New(vg.Length(len(panels))*6*vg.Inch, 4.5*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Inch / 4, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	cs := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, p := range row {
		p.Draw(cs[0][i])
	}
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}
