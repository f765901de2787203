package main

// Go's side of the allocation table in docs/benchmarks.md ("Allocations per
// operation"): the same operations as `print_allocation_table` in
// benches/go_benchmarks.rs, measured with testing.AllocsPerRun. (Go's own
// TestAllocs in src/context/x_test.go checks upper limits, not counts.)
//
//	cd benches/go && GOFLAGS=-mod=mod go test -run Allocs -v

import (
	"context"
	"testing"
	"time"
)

type allocKey int

func TestAllocs(t *testing.T) {
	bg := context.Background()
	live, liveCancel := context.WithTimeout(bg, time.Hour)
	defer liveCancel()
	ended, endedCancel := context.WithTimeout(bg, time.Hour)
	endedCancel()
	for _, c := range []struct {
		desc string
		f    func()
	}{
		{"Background()", func() { _ = context.Background() }},
		{"WithCancel + cancel", func() {
			_, cancel := context.WithCancel(bg)
			cancel()
		}},
		{"WithCancel + select-default on Done() (live) + cancel", func() {
			ctx, cancel := context.WithCancel(bg)
			select {
			case <-ctx.Done():
			default:
			}
			cancel()
		}},
		{"WithTimeout(1 h) + cancel", func() {
			_, cancel := context.WithTimeout(bg, time.Hour)
			cancel()
		}},
		{"WithValue + Value", func() {
			ctx := context.WithValue(bg, allocKey(1), "value")
			_ = ctx.Value(allocKey(1))
		}},
		{"Err() + Done() + Deadline() (live)", func() {
			_ = live.Err()
			_ = live.Done()
			_, _ = live.Deadline()
		}},
		{"Err() + Done() + Deadline() (canceled)", func() {
			_ = ended.Err()
			_ = ended.Done()
			_, _ = ended.Deadline()
		}},
	} {
		t.Logf("%-55s %5.2f", c.desc, testing.AllocsPerRun(10_000, c.f))
	}
}
