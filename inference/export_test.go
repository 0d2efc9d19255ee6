package inference

// ServeH2C is serveH2C for the external test package (fault_test.go), so
// both serve the tier the way `imagegate inference` does from one place.
var ServeH2C = serveH2C
