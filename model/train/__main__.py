from model.train.loop import parse_args, train

train(parse_args())
