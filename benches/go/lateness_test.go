package main

import (
	"math"
	"testing"
)

func TestLatestKeepsEarlyAndCapped(t *testing.T) {
	for _, c := range []struct {
		late []float64
		want float64
	}{
		{[]float64{12.5, 40}, 40},
		{[]float64{-7, -3}, -3},
		{[]float64{5, math.Inf(1)}, math.Inf(1)},
	} {
		if got := latest(c.late); got != c.want {
			t.Errorf("latest(%v) = %v, want %v", c.late, got, c.want)
		}
	}
}
