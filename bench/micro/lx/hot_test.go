package lx
import ("context";"testing";"github.com/varbridge/varbridge")
func BenchmarkLocalSet(b *testing.B){
	ctx := context.Background()
	l, _ := varbridge.NewLocalState()
	defer l.Close()
	l.Register(ctx, "x", varbridge.TypeInteger, int64(0))
	b.ReportAllocs()
	for i:=0;i<b.N;i++{ l.Set(ctx, "x", int64(i)) }
}
func BenchmarkLocalPingPong(b *testing.B){
	ctx := context.Background()
	l, _ := varbridge.NewLocalState()
	defer l.Close()
	l.Register(ctx, "x", varbridge.TypeInteger, int64(0))
	got := make(chan struct{}, 1)
	ref, _ := l.WatchVariables(ctx, []string{"x"}, func(_ string, _, nv any, meta varbridge.UpdateMeta) { if !meta.Initial { got <- struct{}{} } })
	defer l.UnwatchVariables(ref)
	b.ReportAllocs()
	for i:=0;i<b.N;i++{ l.Set(ctx, "x", int64(i+1)); <-got }
}
