package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func initUnary(s *Server, ctx context.Context, id string) (*pb.InitializeSessionResponse, error) {
	resp, err := s.authUnary(ctx, &pb.InitializeSessionRequest{SessionId: id},
		&grpc.UnaryServerInfo{FullMethod: "/varbridge.v1.BridgeService/InitializeSession"},
		func(ctx context.Context, req any) (any, error) {
			return s.InitializeSession(ctx, req.(*pb.InitializeSessionRequest))
		})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.InitializeSessionResponse), nil
}

// Racing creators of one session id: exactly one gets the token.
func TestAuthConcurrentInitializeOneToken(t *testing.T) {
	st := store.New(store.Options{})
	defer st.Close()
	s := New(st, WithAuth(), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	var created, refused atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := initUnary(s, context.Background(), "x")
			switch {
			case err == nil && r.Created && r.SessionToken != "":
				created.Add(1)
			case status.Code(err) == codes.AlreadyExists:
				refused.Add(1)
			default:
				t.Errorf("unexpected: %v, %v", r, err)
			}
		}()
	}
	wg.Wait()
	if created.Load() != 1 || refused.Load() != 31 {
		t.Fatalf("created %d, refused %d; want 1 and 31", created.Load(), refused.Load())
	}
}

// Tokens of expired sessions are dropped once they outnumber live sessions.
func TestAuthPrunesExpiredTokens(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	st := store.New(store.Options{TTL: time.Minute, SweepInterval: time.Hour, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	defer st.Close()
	s := New(st, WithAuth(), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	for i := 0; i < 1100; i++ {
		if _, err := initUnary(s, context.Background(), fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	now.Add(int64(2 * time.Minute))
	if n := len(st.Sweep()); n != 1100 {
		t.Fatalf("swept %d sessions", n)
	}
	if _, err := initUnary(s, context.Background(), "fresh"); err != nil {
		t.Fatal(err)
	}
	s.auth.mu.RLock()
	n := len(s.auth.tokens)
	s.auth.mu.RUnlock()
	if n != 1 {
		t.Fatalf("%d tokens kept after 1100 sessions expired; want only the live one", n)
	}
}
