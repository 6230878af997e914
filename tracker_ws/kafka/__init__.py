"""Every extension of Faust's Kafka consumer, in one place."""
