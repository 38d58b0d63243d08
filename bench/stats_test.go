package bench

import (
	"math"
	"testing"
)

func TestNewSpread(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		in   []float64
		want Spread
	}{
		{[]float64{30, 10, 20}, Spread{N: 3, Min: 10, Median: 20, Max: 30}},
		{[]float64{4, 1, 3, 2}, Spread{N: 4, Min: 1, Median: 2.5, Max: 4}},
		{[]float64{7}, Spread{N: 1, Min: 7, Median: 7, Max: 7}},
		{[]float64{nan, 5, 9, nan}, Spread{N: 2, Min: 5, Median: 7, Max: 9}},
	}
	for _, tc := range tests {
		if got := NewSpread(tc.in); got != tc.want {
			t.Errorf("NewSpread(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if s := NewSpread([]float64{nan}); s.N != 0 || !math.IsNaN(s.Median) {
		t.Errorf("Only NaN: got %+v, want N=0 and NaN figures", s)
	}
}

func TestRatio(t *testing.T) {
	a := NewSpread([]float64{40000, 32000, 26000})
	b := NewSpread([]float64{16000, 20000})
	if got := Ratio(a, b); got != 32000.0/18000 {
		t.Errorf("Ratio = %v, want %v", got, 32000.0/18000)
	}
	if got := Ratio(a, NewSpread(nil)); !math.IsNaN(got) {
		t.Errorf("Ratio to an unmeasured peer = %v, want NaN", got)
	}
	if got := Ratio(a, NewSpread([]float64{0, 0, 0})); !math.IsNaN(got) {
		t.Errorf("Ratio to zero = %v, want NaN", got)
	}
}
