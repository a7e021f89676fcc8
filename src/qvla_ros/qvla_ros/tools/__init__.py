"""Programs that drive the nodes from outside: the demo and its report, qvla-collect, the sim monitor
and session helpers, and the launch logic (bringup) with the process runner the tests and tools share.
None of these runs on a robot."""
