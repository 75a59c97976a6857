package lx
import ("testing";"time")
func BenchmarkNow(b *testing.B){ for i:=0;i<b.N;i++{ _ = time.Now() } }
func BenchmarkMono(b *testing.B){ for i:=0;i<b.N;i++{ _ = mono() } }
