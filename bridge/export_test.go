package bridge

// OddKeys is oddKeys for the external tests (package bridge_test).
var OddKeys = oddKeys
