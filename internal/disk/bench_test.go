package disk_test

import (
	"testing"

	"github.com/varbridge/varbridge/internal/disk"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// BenchmarkSet is the engine's CPU per write: one integer written by one
// writer, no fsync (what the fsync costs is the disk's, not the engine's).
// Compare with -engine=memory via BenchmarkSetMemory.
func BenchmarkSet(b *testing.B) {
	st, _, err := openBench(b, true)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchSet(b, st)
}

// BenchmarkSetMemory is BenchmarkSet without an engine.
func BenchmarkSetMemory(b *testing.B) {
	st, _, err := openBench(b, false)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchSet(b, st)
}

func openBench(b *testing.B, durable bool) (*store.Store, store.Recovered, error) {
	so := store.Options{}
	if durable {
		eng, err := disk.Open(b.TempDir(), disk.Options{Fsync: disk.FsyncNever})
		if err != nil {
			return nil, store.Recovered{}, err
		}
		so.Engine = eng
	}
	return store.Open(so)
}

func benchSet(b *testing.B, st *store.Store) {
	if _, _, err := st.CreateSession("s", 0, map[string]string{"team": "ml"}); err != nil {
		b.Fatal(err)
	}
	if _, _, err := st.Register("s", store.Register{Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: 0}}}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		w := []store.Write{{Identifier: "x", Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(i + 1)}}}}
		if _, err := st.Set("s", w, nil, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
