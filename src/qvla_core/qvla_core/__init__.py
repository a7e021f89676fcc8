"""qvla_core: the transport-free core of qvla. Never imports rclpy."""
