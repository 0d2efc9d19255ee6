package keyservice

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/imagegate/imagegate/store"
)

// MinTokenLen is the shortest token the server and client take.
const MinTokenLen = 32

// ServerConfig is what a Server serves and to whom.
type ServerConfig struct {
	// Keys is the key directory's files (store.OpenKeyFiles). The server
	// does not close them.
	Keys store.KeyBackend
	// Token is the shared secret gateways present (≥ MinTokenLen).
	Token string
	// Logger gets failures and refusals; never keys, tags or tokens.
	Logger *slog.Logger
}

// Server is the key service's HTTP handler.
type Server struct {
	keys   store.KeyBackend
	logger *slog.Logger
	macKey []byte
	want   []byte // HMAC of the token under macKey
}

// Validate fills defaults and reports every problem at once.
func (cfg *ServerConfig) Validate() error {
	var errs []error
	if cfg.Keys == nil {
		errs = append(errs, errors.New("keyservice: no key files"))
	}
	if len(cfg.Token) < MinTokenLen {
		errs = append(errs, errors.New("keyservice: the token must be at least 32 characters"))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// NewServer checks cfg and returns the handler.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{keys: cfg.Keys, logger: cfg.Logger, macKey: make([]byte, 32)}
	rand.Read(s.macKey)
	s.want = s.mac(cfg.Token)
	return s, nil
}

// mac is the token's HMAC under a key of this process: comparing MACs of
// fixed length in constant time says nothing about the token, not even
// its length.
func (s *Server) mac(token string) []byte {
	m := hmac.New(sha256.New, s.macKey)
	m.Write([]byte(token))
	return m.Sum(nil)
}

// ServeHTTP routes POST /v1/keys and GET /healthz.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			reply(w, http.StatusMethodNotAllowed, wireError{"GET only"})
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	case "/v1/keys":
		s.serveKeys(w, r)
	default:
		reply(w, http.StatusNotFound, wireError{"no such endpoint"})
	}
}

func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request) {
	scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || !hmac.Equal(s.mac(got), s.want) {
		s.logger.Warn("key service: request refused: missing or wrong token", "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", "Bearer")
		reply(w, http.StatusUnauthorized, wireError{"missing or invalid bearer token"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		reply(w, http.StatusMethodNotAllowed, wireError{"POST only"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			reply(w, http.StatusRequestEntityTooLarge, wireError{"body too large"})
			return
		}
		reply(w, http.StatusBadRequest, wireError{"cannot read the body"})
		return
	}
	req, err := ParseRequest(body)
	if err != nil {
		reply(w, http.StatusBadRequest, wireError{err.Error()})
		return
	}
	var key []byte
	switch req.Op {
	case OpCreate:
		key, err = s.keys.CreateKey(req.File, req.Slot, req.Tag)
	case OpGet:
		key, err = s.keys.Key(req.File, req.Slot, req.Tag)
	case OpDestroy:
		err = s.keys.DestroyKey(req.File, req.Slot)
	}
	switch {
	case errors.Is(err, store.ErrKeyDestroyed):
		reply(w, http.StatusNotFound, wireError{"key destroyed"})
	case errors.Is(err, store.ErrKeyOwner):
		// A slot handed out twice is a bug worth an operator's look.
		s.logger.Error("key service: slot of another owner", "op", req.Op, "file", string(req.File), "slot", req.Slot)
		reply(w, http.StatusConflict, wireError{"key slot belongs to another owner"})
	case err != nil:
		s.logger.Error("key service: key file", "op", req.Op, "file", string(req.File), "slot", req.Slot, "err", err)
		reply(w, http.StatusInternalServerError, wireError{"key file error"})
	case req.Op == OpDestroy:
		s.logger.Info("key destroyed", "file", string(req.File), "slot", req.Slot)
		reply(w, http.StatusOK, struct{}{})
	default:
		reply(w, http.StatusOK, wireKey{Key: key})
	}
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
