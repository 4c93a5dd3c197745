-- One database per service.
CREATE DATABASE oms_orders;
