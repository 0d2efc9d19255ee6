package testpeer

import (
	"context"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
)

// A peer that loses its port to another process before it binds it is
// started again on another port, and the caller gets the address it
// really listens on.
func TestStartOnFreePortTakesAnotherPort(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(systemPython); err != nil {
		Missing(t, "python3", "Debian package python3")
	}
	const listen = "import signal, socket, sys\n" +
		"host, port = sys.argv[1].rsplit(':', 1)\n" +
		"s = socket.socket()\n" +
		"s.bind((host, int(port)))\n" +
		"s.listen()\n" +
		"signal.pause()\n"
	var tried []string
	_, addr := StartOnFreePort(t, systemPython, nil, func(addr string) ([]string, func(ctx context.Context) error) {
		tried = append(tried, addr)
		if len(tried) == 1 {
			takePort(t, addr) // another process's socket, bound first
		}
		return []string{"-c", listen, addr}, DialReady(addr)
	})
	if len(tried) != 2 || addr != tried[1] || tried[0] == tried[1] {
		t.Fatalf("tried %v, listening on %s: want a second port after the first was taken", tried, addr)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("the peer does not listen on %s: %v", addr, err)
	}
	c.Close()
}

// takePort binds addr's port without listening until t ends.
func takePort(t *testing.T, addr string) {
	t.Helper()
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind %s: %v", addr, err)
	}
}
