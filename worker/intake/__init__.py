"""The intake: one message from the order systems in, one recorded fate out.

``contract`` says what a version-1 event is, ``wire`` bounds what we read, ``store`` writes a
message and its domain rows in one transaction, ``consumer`` is the Celery bootstep that feeds
them from RabbitMQ and decides each message's fate.
"""
