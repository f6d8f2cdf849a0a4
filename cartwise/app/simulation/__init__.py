"""The shopper simulator (`cartwise simulate`): shoppers with tastes (shoppers.py) search Home Depot train-split
queries (queries.py) on a running service and act on its answers by a position-based click model
(click_model.py); the catalog they need (catalog.py) is loaded through Kafka when missing (loading.py); the
driver (driver.py) paces the searches and publishes the events."""
