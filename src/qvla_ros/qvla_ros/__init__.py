"""qvla_ros: thin rclpy nodes that delegate to qvla_core."""
