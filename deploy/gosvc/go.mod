module gosvc

go 1.27.3
