package server

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
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

// A session's token lives and dies with it (the store keeps it): the
// token of an expired session opens nothing, not even a session re-created
// with the same id, which gets its own.
func TestAuthTokenGoesWithItsSession(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	st := store.New(store.Options{TTL: time.Minute, SweepInterval: time.Hour, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	defer st.Close()
	s := New(st, WithAuth(), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	first, err := initUnary(s, context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	now.Add(int64(2 * time.Minute))
	if n := len(st.Sweep()); n != 1 {
		t.Fatalf("swept %d sessions", n)
	}
	if _, ok := st.TokenHash("x"); ok {
		t.Fatal("an expired session's token is still kept")
	}
	second, err := initUnary(s, context.Background(), "x")
	if err != nil || !second.Created || second.SessionToken == first.SessionToken {
		t.Fatalf("re-created session: %v, %v", second, err)
	}
	bearerCtx := func(tok string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs(AuthHeader, "Bearer "+tok))
	}
	if err := s.authorize(bearerCtx(first.SessionToken), "x"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the expired session's token on the new one: %v, want PERMISSION_DENIED", err)
	}
	if err := s.authorize(bearerCtx(second.SessionToken), "x"); err != nil {
		t.Errorf("the new session's own token: %v", err)
	}
}
